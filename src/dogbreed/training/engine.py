"""The training loop shared by train_model.py and hpo.py: epochs, checkpoints and resuming, and what a job
writes at its end (the artifact, the reports, the training insights)."""

from __future__ import annotations

import copy
import logging
import signal
import time
from argparse import Namespace
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dogbreed import sagemaker_env
from dogbreed.labels import display_label
from dogbreed.training import distributed, reports
from dogbreed.training.artifact import make_metadata, save_artifact
from dogbreed.training.checkpoint import load_checkpoint, save_checkpoint
from dogbreed.training.data import DatasetSplits, discover, resolve_split_dirs
from dogbreed.training.debug_report import build_report
from dogbreed.training.debugger import DebugHook, create_hook
from dogbreed.training.distributed import Group
from dogbreed.training.export import Int8Gate, parity_batches, write_onnx_variants
from dogbreed.training.metrics import format_metrics
from dogbreed.training.profile import SystemSampler, write_profile, write_update_ratios
from dogbreed.training.trainer import EpochProgress, EvalResult, Interrupted, StopRequest, Trainer, select_device
from dogbreed.training.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)
metrics_log = logging.getLogger("dogbreed.metrics")

# The flags recorded in the artifact as the job's hyperparameters.
HYPERPARAMETERS = (
    "model",
    "pretrained",
    "freeze_backbone",
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "momentum",
    "weight_decay",
    "image_size",
    "seed",
    "patience",
    "amp",
    "int8",
    "int8_calibration_images",
    "int8_max_accuracy_drop",
    "int8_min_agreement",
    "recompute_bn_stats",
)


@contextmanager
def stop_on_signals():
    """Turn SIGTERM/SIGINT into a flag the loop checks between batches.

    SageMaker sends SIGTERM before it reclaims a spot instance; stopping at a
    batch boundary lets the job checkpoint that step and resume from it exactly.
    """
    request = StopRequest()

    def handler(signum, _frame):
        request.signal = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class TrainingState:
    """What a checkpoint carries besides the model, optimizer and scaler."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "val_accuracy": -1.0, "val_loss": float("inf"), "state": None}
    )
    stale_epochs: int = 0
    stopped_early: bool = False
    epochs_done: int = 0
    partial: EpochProgress | None = None  # the epoch a stop signal interrupted

    def record_epoch(self, row: dict[str, float], model: nn.Module, patience: int, epochs: int) -> None:
        """Add a finished epoch: history, the best weights so far, early stopping."""
        self.history.append(row)
        self.epochs_done, self.partial = int(row["epoch"]), None
        if row["val_accuracy"] > self.best["val_accuracy"]:
            self.best = {
                "epoch": self.epochs_done,
                "val_accuracy": row["val_accuracy"],
                "val_loss": row["val_loss"],
                "state": copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()}),
            }
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        if patience and self.stale_epochs >= patience and self.epochs_done < epochs:
            self.stopped_early = True
            log.info("early stopping: no val_accuracy gain for %d epoch(s)", self.stale_epochs)


def checkpoint_of(trainer: Trainer, state: TrainingState) -> dict[str, Any]:
    """The checkpoint: enough to continue exactly, mid-epoch included (the global RNG drives dropout)."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "identity": trainer.identity(),
        "epoch": state.epochs_done,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "history": state.history,
        "best": state.best,
        "stale_epochs": state.stale_epochs,
        "stopped_early": state.stopped_early,
        "partial": asdict(state.partial) if state.partial else None,
        "rng": rng,
    }


def resume(trainer: Trainer, directory: Path) -> TrainingState:
    """The state of the checkpoint in ``directory``, loaded into ``trainer``; a fresh state when there is none.

    Under torchrun, rank 0 reads it and every rank resumes from that one checkpoint.
    """
    group = trainer.group
    checkpoint = group.from_main(load_checkpoint(directory, trainer.identity()) if group.is_main else None)
    if checkpoint is None:
        return TrainingState()
    trainer.model.load_state_dict(checkpoint["model"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.scaler.load_state_dict(checkpoint["scaler"])
    rng = checkpoint.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and trainer.device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])
    partial = checkpoint.get("partial")
    state = TrainingState(
        history=checkpoint["history"],
        best=checkpoint["best"],
        stale_epochs=checkpoint["stale_epochs"],
        stopped_early=checkpoint["stopped_early"],
        epochs_done=checkpoint["epoch"],
        partial=EpochProgress(**partial) if partial else None,
    )
    if state.partial is not None and not group.is_main:
        # The checkpoint's running sums are all ranks' together; rank 0 carries them, the others add from zero.
        state.partial = EpochProgress(state.partial.epoch, state.partial.batches)
    if state.partial is None:
        log.info("resuming from checkpoint %s after epoch %d", directory, state.epochs_done)
    else:
        log.info(
            "resuming from checkpoint %s in epoch %d after step %d",
            directory,
            state.partial.epoch,
            state.partial.batches,
        )
    return state


def train_epochs(trainer: Trainer, state: TrainingState, stop: StopRequest) -> None:
    """Train the epochs ``state`` has not done yet, checkpointing after each one and at a stop signal."""
    args, group = trainer.args, trainer.group
    while state.epochs_done < args.epochs and not state.stopped_early:
        epoch = state.epochs_done + 1
        started = time.monotonic()
        state.partial = progress = state.partial or EpochProgress(epoch)
        try:
            trainer.train_one_epoch(progress, stop)
        except Interrupted:
            _sum_over_ranks(progress, group)
            if group.is_main:
                save_checkpoint(args.checkpoint_dir, checkpoint_of(trainer, state))
            raise
        _sum_over_ranks(progress, group)
        row = {
            "epoch": epoch,
            "train_loss": progress.loss_sum / max(progress.seen, 1),
            "train_accuracy": progress.correct / max(progress.seen, 1),
            **group.from_main(trainer.validate(f"epoch {epoch}/{args.epochs} valid") if group.is_main else None),
        }
        metrics_log.info(format_metrics(**row))
        elapsed = time.monotonic() - started
        log.info("epoch %d took %.1fs (%.1f train images/s)", epoch, elapsed, progress.seen / elapsed)
        state.record_epoch(row, trainer.model, args.patience, args.epochs)
        if group.is_main:
            save_checkpoint(args.checkpoint_dir, checkpoint_of(trainer, state))
        signum = group.stop_signal(stop.signal)
        if signum is not None:
            raise Interrupted(signum, f"after epoch {epoch}")


def _sum_over_ranks(progress: EpochProgress, group: Group) -> None:
    """Make the epoch's running loss and accuracy counts those of all ranks together."""
    loss_sum, correct, seen = group.sum(progress.loss_sum, progress.correct, progress.seen)
    progress.loss_sum, progress.correct, progress.seen = loss_sum, int(correct), int(seen)


def fit(args: Namespace) -> dict[str, Any]:
    """Train, evaluate and write the artifact and reports; returns the final metrics (rank 0's; the other ranks
    of a torchrun job train and return an empty dict)."""
    group = distributed.start(args.device)
    try:
        return fit_in_group(args, group)
    finally:
        distributed.end(group)


def fit_in_group(args: Namespace, group: Group) -> dict[str, Any]:
    device = select_device(args.device, group)
    # The same seed on every rank: the same initial weights, and the same dropout stream, which keeps the
    # checkpoint's (rank 0's) random state right for every rank on resume.
    torch.manual_seed(args.seed)
    split_dirs = resolve_split_dirs(
        args.data_dir, {"train": args.train_dir, "valid": args.valid_dir, "test": args.test_dir}
    )
    data = discover(split_dirs, args.bad_images, workers=sagemaker_env.num_cpus())
    for split in ("train", "valid", "test"):
        log.info(
            "%s: %d images in %d classes (%s)",
            split,
            len(data.splits[split].samples),
            len(data.class_folders),
            data.splits[split].root,
        )
    metrics_log.disabled = not group.is_main  # the tuning job's regexes read one set of metric lines
    hook = (
        create_hook(args.debug_out_dir, args.debug_save_interval, args.debug_collections, args.debug_hook)
        if group.is_main
        else DebugHook()
    )
    log.info(
        "device %s, model %s, pretrained=%s, freeze_backbone=%s, amp=%s",
        device,
        args.model,
        args.pretrained,
        args.freeze_backbone,
        args.amp,
    )
    trainer = Trainer(args, data, device, hook, group)
    try:
        return train_and_finish(trainer)
    finally:
        trainer.close()


def train_and_finish(trainer: Trainer) -> dict[str, Any]:
    """Resume or start, train to the last epoch or a stop signal, then (rank 0) write the reports and artifact."""
    args, group = trainer.args, trainer.group
    state = resume(trainer, args.checkpoint_dir)
    with stop_on_signals() as stop, SystemSampler(trainer.device) as sampler:
        train_epochs(trainer, state, stop)
    if not group.is_main:
        return {}
    write_profile(args.output_data_dir, trainer.timer, sampler)
    if trainer.update_ratios is not None:
        write_update_ratios(args.output_data_dir, trainer.update_ratios)
    return finish(trainer, state)


def finish(trainer: Trainer, state: TrainingState) -> dict[str, Any]:
    """Test the best weights, then write the artifact (with its ONNX variants) and the reports."""
    args, data, hook, best = trainer.args, trainer.data, trainer.hook, state.best
    if best["state"] is not None:
        trainer.model.load_state_dict(best["state"])
    metrics_log.info(
        format_metrics(best_epoch=best["epoch"], val_loss=best["val_loss"], val_accuracy=best["val_accuracy"])
    )
    test = trainer.evaluate("test", "test")
    metrics_log.info(format_metrics(test_loss=test.loss, test_accuracy=test.accuracy))
    hook.close()
    onnx_section = write_onnx_variants(
        trainer.plain_copy(),
        args.model_dir,
        args.image_size,
        parity_batches=parity_batches(trainer.loaders["test"]),
        test_loader=trainer.loaders["test"],
        calibration_batches=trainer.calibration_batches() if args.int8 else None,
        gate=Int8Gate.from_args(args),
    )

    final = {
        "best_epoch": best["epoch"],
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
        "test_loss": test.loss,
        "test_accuracy": test.accuracy,
    }
    labels = [display_label(c) for c in data.class_folders]
    metadata = make_metadata(
        architecture=args.model,
        class_folders=data.class_folders,
        input_size=args.image_size,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        metrics=final,
        hyperparameters={
            **{k: getattr(args, k) for k in HYPERPARAMETERS},
            "recompute_bn_stats": trainer.recompute_batchnorm,
        },  # the choice made, not the flag
    )
    metadata["onnx"] = onnx_section
    save_artifact(args.model_dir, trainer.model.state_dict(), metadata)
    log.info("model artifact written to %s", args.model_dir)
    write_reports(args.output_data_dir, data, state.history, final, test, labels, state.stopped_early, onnx_section)
    write_insights(hook, args.output_data_dir)
    return final


def write_insights(hook: DebugHook, output_dir: Path) -> None:
    """Run the rules on the hook's trial (rules.json) and write debugger-report.html beside metrics.json.

    The artifact and the metrics are written by then: a report that cannot be built is logged, and the job
    still succeeds.
    """
    trial_dir = Path(hook.out_dir) if hook.out_dir and "://" not in hook.out_dir else None
    if trial_dir is None or not trial_dir.is_dir():
        return
    try:
        log.info("training insights written to %s", build_report(trial_dir, output_dir))
    except Exception as exc:
        log.warning("could not build the training insights from %s: %s: %s", trial_dir, type(exc).__name__, exc)


def write_reports(
    output_dir: Path,
    data: DatasetSplits,
    history,
    final,
    test: EvalResult,
    labels,
    stopped_early: bool,
    onnx_section: dict[str, Any],
) -> None:
    matrix = reports.confusion_matrix(test.targets, test.predictions, len(data.class_folders))
    reports.write_metrics(
        output_dir,
        {
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
            "serving_variant": {
                "variant": onnx_section["serve"],
                "reason": onnx_section["reason"],
                **{f"{name}_test_accuracy": v["test_accuracy"] for name, v in onnx_section["variants"].items()},
            },
        },
    )
    if history:
        reports.plot_learning_curves(output_dir, history)
    reports.plot_confusion_matrix(output_dir, matrix, labels)
    log.info("metrics and plots written to %s", output_dir)
