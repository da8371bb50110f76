"""Training throughput: the real pipeline against a bare loop over in-memory tensors.

Both sides train the same model with the same optimizer, batch size and image
size. The pipeline side is the real training code (``Trainer.train_one_epoch``):
JPEG decoding and augmentation in DataLoader workers, the progress reporting
and the default smdebug hook (losses every step; weight and gradient reductions every 10 steps). The
same pipeline without the hook (``--debug-hook false``) runs in alternating epochs, which measures the
hook's overhead. The bare side feeds pre-made tensors straight into forward/backward/step.

The images are the bundled sample re-encoded at 500x375, the typical size of
a dogImages photo, so decoding costs what it costs on the real dataset.

    python bench/train_throughput.py [--model resnet18] [--batch-size 32] [--image-size 224]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from dogbreed.training.cli import get_args_parser
from dogbreed.training.data import discover, resolve_split_dirs
from dogbreed.training.debugger import create_hook
from dogbreed.training.trainer import EpochProgress, StopRequest, Trainer

SAMPLE = Path(__file__).resolve().parent.parent / "local_data" / "sample"
PHOTO_SIZE = (500, 375)


def make_photo_dataset(dest: Path, copies: int) -> Path:
    """The sample set at photo resolution; the train split repeated ``copies`` times."""
    for src in SAMPLE.rglob("*.jpg"):
        split = src.relative_to(SAMPLE).parts[0]
        image = Image.open(src).convert("RGB").resize(PHOTO_SIZE, Image.BILINEAR)
        for k in range(copies if split == "train" else 1):
            out = dest / src.relative_to(SAMPLE).with_name(f"{src.stem}_{k}.jpg")
            out.parent.mkdir(parents=True, exist_ok=True)
            image.save(out, quality=90)
    return dest


def bare_loop(trainer: Trainer, batches: int, batch_size: int, image_size: int) -> float:
    """Images per second of forward/backward/step on tensors already in memory."""
    model, optimizer, criterion = trainer.model, trainer.optimizer, trainer.criterion
    data = [(torch.randn(batch_size, 3, image_size, image_size), torch.randint(0, 4, (batch_size,))) for _ in range(4)]
    from dogbreed.training.models import set_train_mode

    set_train_mode(model, trainer.args.model, trainer.args.freeze_backbone)
    for images, targets in data[:2]:  # warm-up
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), targets).backward()
        optimizer.step()
    start = time.perf_counter()
    for step in range(batches):
        images, targets = data[step % len(data)]
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
        loss.item()
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--freeze-backbone", default="true", help="the training default: feature extraction")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the training default)")
    parser.add_argument("--copies", type=int, default=2, help="train split repetitions (160 images each)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per side, alternating")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    hooks = []
    try:
        data_dir = make_photo_dataset(work / "data", opts.copies)
        data = discover(resolve_split_dirs(data_dir, {"train": None, "valid": None, "test": None}))

        def trainer(hook_on: bool) -> Trainer:
            argv = [
                "--data-dir",
                str(data_dir),
                "--model",
                opts.model,
                "--batch-size",
                str(opts.batch_size),
                "--image-size",
                str(opts.image_size),
                "--pretrained",
                "false",
                "--freeze-backbone",
                opts.freeze_backbone,
                "--debug-hook",
                str(hook_on),
                "--debug-out-dir",
                str(work / f"debug-{hook_on}"),
                "--checkpoint-dir",
                str(work / "ckpt"),
                "--log-interval",
                "1000000",
            ]
            if opts.workers is not None:
                argv += ["--workers", str(opts.workers)]
            args = get_args_parser(prog="bench").parse_args(argv)
            hook = create_hook(args.debug_out_dir, args.debug_save_interval, args.debug_collections, hook_on)
            hooks.append(hook)
            return Trainer(args, data, torch.device("cpu"), hook)

        sides = {"hook": trainer(True), "no_hook": trainer(False)}
        stop = StopRequest()
        images = (len(data.splits["train"].samples) // opts.batch_size) * opts.batch_size
        elapsed = {name: 0.0 for name in sides}
        for side in sides.values():
            side.train_one_epoch(EpochProgress(1), stop)  # warm-up: starts the persistent workers
        for epoch in range(2, 2 + opts.rounds):  # alternating epochs: both sides see the same noise
            for name, side in sides.items():
                start = time.perf_counter()
                side.train_one_epoch(EpochProgress(epoch), stop)
                elapsed[name] += time.perf_counter() - start
        args = sides["hook"].args
        bare = bare_loop(sides["no_hook"], images // opts.batch_size, opts.batch_size, opts.image_size)
    finally:
        for hook in hooks:
            hook.close()
        shutil.rmtree(work, ignore_errors=True)

    pipeline = {name: images * opts.rounds / seconds for name, seconds in elapsed.items()}
    result = {
        "model": opts.model,
        "batch_size": opts.batch_size,
        "image_size": opts.image_size,
        "freeze_backbone": args.freeze_backbone,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "rounds": opts.rounds,
        "pipeline_images_per_s": round(pipeline["hook"], 2),
        "pipeline_no_hook_images_per_s": round(pipeline["no_hook"], 2),
        "hook_overhead": round(elapsed["hook"] / elapsed["no_hook"] - 1, 4),
        "bare_images_per_s": round(bare, 2),
        "ratio": round(pipeline["hook"] / bare, 3),
    }
    print(json.dumps(result))
    print(
        f"pipeline {pipeline['hook']:.1f} img/s ({pipeline['no_hook']:.1f} without the hook: overhead "
        f"{result['hook_overhead'] * 100:.1f}%), bare loop {bare:.1f} img/s, ratio {result['ratio']:.2f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
