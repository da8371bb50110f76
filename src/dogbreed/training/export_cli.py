"""Add the ONNX variants to an artifact that was written before training made them (``make export-onnx``).

    dogbreed export --model-dir build/train/model [--data-dir local_data/sample]

With ``--data-dir`` (a dogImages-style folder with the artifact's classes),
the parity check runs on its test images, int8 is calibrated on its training
images and gated on its test split, exactly as at the end of training.
Without it, parity runs on a fixed batch of random inputs and no int8 is
made: int8 needs real images to calibrate and to be judged on.
``metadata.json`` gets the ``onnx`` section either way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dogbreed.artifact import write_metadata
from dogbreed.errors import DataError, DogbreedError, run_cli
from dogbreed.training.artifact import load_artifact
from dogbreed.training.data import ImageFileDataset, discover, resolve_split_dirs, sampled_batches
from dogbreed.training.export import Int8Gate, parity_batches, write_onnx_variants
from dogbreed.training.transforms import eval_transform, resize_size

RANDOM_PARITY_IMAGES = 16


def get_args_parser(prog: str = "dogbreed export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="an artifact folder written by train_model.py")
    parser.add_argument("--data-dir", type=Path, help="dogImages-style folder with the artifact's classes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--int8-calibration-images", type=int, default=64)
    parser.add_argument("--int8-max-accuracy-drop", type=float, default=1.0, help="points")
    parser.add_argument("--int8-min-agreement", type=float, default=0.98)
    return parser


def export_with_data(model, metadata, args) -> dict:
    data = discover(resolve_split_dirs(args.data_dir, {}))
    if data.class_folders != metadata["class_folders"]:
        raise DataError(
            f"{args.data_dir} holds classes {data.class_folders[:3]}..., not the artifact's "
            f"{metadata['class_folders'][:3]}..."
        )
    size = metadata["input_size"]
    transform = eval_transform(size, metadata["mean"], metadata["std"])
    test = DataLoader(
        ImageFileDataset(data.splits["test"].samples, transform, resize_size(size)), batch_size=args.batch_size
    )
    return write_onnx_variants(
        model,
        args.model_dir,
        size,
        parity_batches=parity_batches(test),
        test_loader=test,
        calibration_batches=sampled_batches(
            data.splits["train"].samples, args.int8_calibration_images, 0, transform, resize_size(size), args.batch_size
        ),
        gate=Int8Gate.from_args(args),
    )


def export_without_data(model, metadata, args) -> dict:
    size = metadata["input_size"]
    inputs = torch.randn(RANDOM_PARITY_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))
    section = write_onnx_variants(model, args.model_dir, size, parity_batches=[inputs])
    section["parity"]["inputs"] = "random"
    section["reason"] = "int8 was not made: it needs --data-dir to calibrate and to be judged on"
    return section


def main(args: argparse.Namespace) -> None:
    model, metadata = load_artifact(args.model_dir)
    section = export_with_data(model, metadata, args) if args.data_dir else export_without_data(model, metadata, args)
    metadata["onnx"] = section
    write_metadata(args.model_dir, metadata)
    print(
        f"wrote {', '.join(v['file'] for v in section['variants'].values())} in {args.model_dir}; "
        f"serving uses {section['serve']}: {section['reason']}"
    )


def run(argv: list[str] | None = None, prog: str = "dogbreed export") -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    args = get_args_parser(prog).parse_args(argv)
    return run_cli(prog, lambda: main(args), errors=(DogbreedError, OSError))
