"""The training loop shared by train_model.py and hpo.py."""

from __future__ import annotations

import copy
import logging
import signal
import time
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dogbreed import sagemaker_env
from dogbreed.artifact import make_metadata, save_artifact
from dogbreed.errors import ConfigError
from dogbreed.labels import display_label
from dogbreed.models import BATCHNORM_STATS_IMAGES, build_model, recomputes_batchnorm, set_train_mode
from dogbreed.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, resize_size, train_transform
from dogbreed.training import reports
from dogbreed.training.checkpoint import load_checkpoint, save_checkpoint
from dogbreed.training.data import DatasetSplits, ImageFileDataset, discover, resolve_split_dirs, sampled_batches
from dogbreed.training.debugger import DebugHook, create_hook
from dogbreed.training.export import Int8Gate, parity_batches, write_onnx_variants
from dogbreed.training.metrics import format_metrics
from dogbreed.training.precision import choose_precision
from dogbreed.training.progress import Progress

log = logging.getLogger(__name__)
metrics_log = logging.getLogger("dogbreed.metrics")

# The flags recorded in the artifact as the job's hyperparameters.
HYPERPARAMETERS = (
    "model", "pretrained", "freeze_backbone", "epochs", "batch_size", "learning_rate", "optimizer",
    "momentum", "weight_decay", "image_size", "seed", "patience", "amp", "int8", "int8_calibration_images",
    "int8_max_accuracy_drop", "int8_min_agreement", "recompute_bn_stats",
)


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived; the last epoch checkpoint is kept for resuming."""


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    targets: torch.Tensor
    predictions: torch.Tensor


@contextmanager
def stop_on_signals():
    """Turn SIGTERM/SIGINT into a flag the loop checks between batches.

    SageMaker sends SIGTERM before it reclaims a spot instance; stopping at a
    batch boundary keeps the checkpoint of the last whole epoch intact.
    """
    state = {"signal": None}

    def handler(signum, _frame):
        state["signal"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def make_optimizer(args: Namespace, params) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.learning_rate, momentum=args.momentum,
                               weight_decay=args.weight_decay)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    return torch.optim.Adam(params, lr=args.learning_rate, weight_decay=args.weight_decay)


class Trainer:
    def __init__(self, args: Namespace, data: DatasetSplits, device: torch.device, hook: DebugHook):
        self.args = args
        self.data = data
        self.device = device
        self.hook = hook
        self.num_classes = len(data.class_folders)
        self.model = build_model(
            args.model, self.num_classes, pretrained=args.pretrained,
            weights_location=args.pretrained_weights, freeze_backbone=args.freeze_backbone,
        ).to(device)
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = make_optimizer(args, self.model.parameters())
        self.precision = choose_precision(args.amp, device, self.model, self.criterion, args.image_size,
                                          self.num_classes)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.enabled and device.type == "cuda")
        hook.register(self.model, self.criterion)
        self.loaders = self._make_loaders()
        self.recompute_batchnorm = recomputes_batchnorm(args.model, args.recompute_bn_stats, args.freeze_backbone)
        if self.recompute_batchnorm:
            log.info("BatchNorm statistics are recomputed on %d training images before each evaluation",
                     min(BATCHNORM_STATS_IMAGES, len(data.splits["train"].samples)))

    def _make_loaders(self) -> dict[str, DataLoader]:
        args = self.args
        draft = resize_size(args.image_size)
        common = dict(batch_size=args.batch_size, num_workers=args.workers,
                      pin_memory=self.device.type == "cuda", persistent_workers=args.workers > 0)
        self.shuffle_generator = torch.Generator()
        train_set = ImageFileDataset(self.data.splits["train"].samples, train_transform(args.image_size), draft)
        loaders = {"train": DataLoader(train_set, shuffle=True, generator=self.shuffle_generator,
                                       drop_last=len(train_set) > args.batch_size, **common)}
        for split in ("valid", "test"):
            dataset = ImageFileDataset(self.data.splits[split].samples, eval_transform(args.image_size), draft)
            loaders[split] = DataLoader(dataset, shuffle=False, **common)
        return loaders

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.enabled)

    def train_one_epoch(self, epoch: int, stop: dict) -> tuple[float, float]:
        set_train_mode(self.model, self.args.model, self.args.freeze_backbone)
        self.hook.train()
        self.shuffle_generator.manual_seed(self.args.seed + epoch)
        loader = self.loaders["train"]
        progress = Progress(loader, total=len(loader), desc=f"epoch {epoch}/{self.args.epochs} train",
                            log_every=self.args.log_interval)
        total_loss, correct, seen = 0.0, 0, 0
        for images, targets in progress:
            if stop["signal"] is not None:
                raise Interrupted(f"signal {stop['signal']} during epoch {epoch}")
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                outputs = self.model(images)
                loss = self.criterion(outputs, targets)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            batch = targets.size(0)
            total_loss += loss.item() * batch
            correct += int((outputs.argmax(1) == targets).sum())
            seen += batch
            progress.set_postfix(loss=total_loss / seen, acc=correct / seen)
        if stop["signal"] is not None:
            raise Interrupted(f"signal {stop['signal']} at the end of epoch {epoch}")
        return total_loss / max(seen, 1), correct / max(seen, 1)

    @torch.no_grad()
    def evaluate(self, split: str, desc: str) -> EvalResult:
        self.model.eval()
        self.hook.eval() if split == "valid" else self.hook.predict()
        loader = self.loaders[split]
        total_loss, all_targets, all_predictions = 0.0, [], []
        for images, targets in Progress(loader, total=len(loader), desc=desc, log_every=self.args.log_interval):
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with self._autocast():
                outputs = self.model(images)
                loss = self.criterion(outputs, targets)
            total_loss += loss.item() * targets.size(0)
            all_targets.append(targets.cpu())
            all_predictions.append(outputs.argmax(1).cpu())
        targets_t = torch.cat(all_targets)
        predictions_t = torch.cat(all_predictions)
        n = max(len(targets_t), 1)
        return EvalResult(total_loss / n, float((targets_t == predictions_t).sum()) / n, targets_t, predictions_t)

    def refresh_batchnorm_stats(self) -> None:
        """Replace BatchNorm's running averages with statistics of the current weights (precise BatchNorm).

        The pass runs on a hook-free copy, so smdebug sees no extra steps, over a seeded sample through the
        evaluation transform. Dropout in the copy and the loader's worker seeds draw random numbers, so the pass
        runs on forked generators: training goes on exactly as it would without it.
        """
        if not self.recompute_batchnorm:
            return
        args = self.args
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            model = self.plain_copy().to(self.device)
            batches = sampled_batches(self.data.splits["train"].samples, BATCHNORM_STATS_IMAGES, args.seed,
                                      eval_transform(args.image_size), resize_size(args.image_size),
                                      args.batch_size, args.workers)
            torch.optim.swa_utils.update_bn(batches, model, self.device)
        self.model.load_state_dict(model.state_dict())

    def plain_copy(self) -> nn.Module:
        """The model's weights in a fresh CPU module in eval mode, without the smdebug hook's callbacks."""
        plain = build_model(self.args.model, self.num_classes, pretrained=False)
        plain.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        return plain.eval()

    def calibration_batches(self) -> Iterator[torch.Tensor]:
        """A seeded sample of training images through the evaluation transform, to calibrate int8."""
        args = self.args
        return sampled_batches(self.data.splits["train"].samples, args.int8_calibration_images, args.seed,
                                   eval_transform(args.image_size), resize_size(args.image_size), args.batch_size,
                                   args.workers)

    def identity(self) -> dict[str, Any]:
        return {
            "architecture": self.args.model,
            "class_folders": list(self.data.class_folders),
            "image_size": self.args.image_size,
            "freeze_backbone": self.args.freeze_backbone,
        }


def fit(args: Namespace) -> dict[str, Any]:
    """Train, evaluate and write the artifact and reports; returns the final metrics."""
    device = select_device(args.device)
    torch.manual_seed(args.seed)
    split_dirs = resolve_split_dirs(
        args.data_dir, {"train": args.train_dir, "valid": args.valid_dir, "test": args.test_dir}
    )
    data = discover(split_dirs, args.bad_images, workers=sagemaker_env.num_cpus())
    for split in ("train", "valid", "test"):
        log.info("%s: %d images in %d classes (%s)", split, len(data.splits[split].samples),
                 len(data.class_folders), data.splits[split].root)
    hook = create_hook(args.debug_out_dir, args.debug_save_interval, args.debug_collections)
    log.info("device %s, model %s, pretrained=%s, freeze_backbone=%s, amp=%s", device, args.model,
             args.pretrained, args.freeze_backbone, args.amp)
    trainer = Trainer(args, data, device, hook)

    history: list[dict[str, float]] = []
    best = {"epoch": 0, "val_accuracy": -1.0, "val_loss": float("inf"), "state": None}
    stale_epochs, start_epoch, stopped_early = 0, 1, False
    checkpoint = load_checkpoint(args.checkpoint_dir, trainer.identity())
    if checkpoint is not None:
        trainer.model.load_state_dict(checkpoint["model"])
        trainer.optimizer.load_state_dict(checkpoint["optimizer"])
        trainer.scaler.load_state_dict(checkpoint["scaler"])
        history, best, stale_epochs = checkpoint["history"], checkpoint["best"], checkpoint["stale_epochs"]
        stopped_early = checkpoint["stopped_early"]
        start_epoch = checkpoint["epoch"] + 1
        log.info("resuming from checkpoint %s after epoch %d", args.checkpoint_dir, checkpoint["epoch"])

    with stop_on_signals() as stop:
        for epoch in range(start_epoch, args.epochs + 1):
            if stopped_early:
                break
            started = time.monotonic()
            train_loss, train_acc = trainer.train_one_epoch(epoch, stop)
            trainer.refresh_batchnorm_stats()
            val = trainer.evaluate("valid", f"epoch {epoch}/{args.epochs} valid")
            elapsed = time.monotonic() - started
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val.loss, "val_accuracy": val.accuracy}
            history.append(row)
            metrics_log.info(format_metrics(**row))
            log.info("epoch %d took %.1fs (%.1f train images/s)", epoch, elapsed,
                     len(data.splits["train"].samples) / elapsed)
            if val.accuracy > best["val_accuracy"]:
                best = {"epoch": epoch, "val_accuracy": val.accuracy, "val_loss": val.loss,
                        "state": copy.deepcopy({k: v.cpu() for k, v in trainer.model.state_dict().items()})}
                stale_epochs = 0
            else:
                stale_epochs += 1
            if args.patience and stale_epochs >= args.patience and epoch < args.epochs:
                stopped_early = True
                log.info("early stopping: no val_accuracy gain for %d epoch(s)", stale_epochs)
            save_checkpoint(args.checkpoint_dir, {
                "identity": trainer.identity(), "epoch": epoch, "model": trainer.model.state_dict(),
                "optimizer": trainer.optimizer.state_dict(), "scaler": trainer.scaler.state_dict(),
                "history": history, "best": best, "stale_epochs": stale_epochs, "stopped_early": stopped_early,
            })
            if stop["signal"] is not None:
                raise Interrupted(f"signal {stop['signal']} after epoch {epoch}")

    if best["state"] is not None:
        trainer.model.load_state_dict(best["state"])
    metrics_log.info(format_metrics(best_epoch=best["epoch"], val_loss=best["val_loss"],
                                    val_accuracy=best["val_accuracy"]))
    test = trainer.evaluate("test", "test")
    metrics_log.info(format_metrics(test_loss=test.loss, test_accuracy=test.accuracy))
    hook.close()
    onnx_section = write_onnx_variants(
        trainer.plain_copy(), args.model_dir, args.image_size,
        parity_batches=parity_batches(trainer.loaders["test"]), test_loader=trainer.loaders["test"],
        calibration_batches=trainer.calibration_batches() if args.int8 else None, gate=Int8Gate.from_args(args))

    final = {"best_epoch": best["epoch"], "val_loss": best["val_loss"], "val_accuracy": best["val_accuracy"],
             "test_loss": test.loss, "test_accuracy": test.accuracy}
    labels = [display_label(c) for c in data.class_folders]
    metadata = make_metadata(
        architecture=args.model, class_folders=data.class_folders, input_size=args.image_size,
        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), metrics=final,
        hyperparameters={**{k: getattr(args, k) for k in HYPERPARAMETERS},
                         "recompute_bn_stats": trainer.recompute_batchnorm},  # the choice made, not the flag
    )
    metadata["onnx"] = onnx_section
    save_artifact(args.model_dir, trainer.model.state_dict(), metadata)
    log.info("model artifact written to %s", args.model_dir)
    write_reports(args.output_data_dir, data, history, final, test, labels, stopped_early, onnx_section)
    return final


def write_reports(output_dir: Path, data: DatasetSplits, history, final, test: EvalResult, labels,
                  stopped_early: bool, onnx_section: dict[str, Any]) -> None:
    matrix = reports.confusion_matrix(test.targets, test.predictions, len(data.class_folders))
    reports.write_metrics(output_dir, {
        **final,
        "epochs_completed": len(history),
        "stopped_early": stopped_early,
        "history": history,
        "test": {
            "accuracy": test.accuracy,
            "loss": test.loss,
            "per_class": reports.per_class_report(matrix, data.class_folders, labels),
            "confusion_matrix": matrix.tolist(),
        },
        "class_folders": data.class_folders,
        "labels": labels,
        "class_counts": {s: data.class_counts(s) for s in ("train", "valid", "test")},
        "skipped_images": [{"path": str(p), "reason": why} for p, why in data.skipped],
        "serving_variant": {"variant": onnx_section["serve"], "reason": onnx_section["reason"],
                            **{f"{name}_test_accuracy": v["test_accuracy"]
                               for name, v in onnx_section["variants"].items()}},
    })
    if history:
        reports.plot_learning_curves(output_dir, history)
    reports.plot_confusion_matrix(output_dir, matrix, labels)
    log.info("metrics and plots written to %s", output_dir)
