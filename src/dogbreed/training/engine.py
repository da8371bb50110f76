"""The training loop shared by train_model.py and hpo.py."""

from __future__ import annotations

import copy
import logging
import signal
import time
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dogbreed import sagemaker_env
from dogbreed.artifact import make_metadata, save_artifact
from dogbreed.errors import ConfigError
from dogbreed.labels import display_label
from dogbreed.models import BATCHNORM_STATS_IMAGES, build_model, recomputes_batchnorm, set_train_mode
from dogbreed.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, resize_size, train_transform
from dogbreed.training import distributed, reports
from dogbreed.training.checkpoint import load_checkpoint, save_checkpoint
from dogbreed.training.data import (DatasetSplits, ImageFileDataset, SeededEpochOrder, discover,
                                   own_process_group, resolve_split_dirs, sampled_batches)
from dogbreed.training.debug_report import build_report
from dogbreed.training.debugger import DebugHook, create_hook
from dogbreed.training.distributed import Group
from dogbreed.training.export import Int8Gate, parity_batches, write_onnx_variants
from dogbreed.training.metrics import format_metrics
from dogbreed.training.precision import choose_precision
from dogbreed.training.profile import StepTimer, SystemSampler, UpdateRatios, write_profile, write_update_ratios
from dogbreed.training.progress import Progress
from dogbreed.training.rule_tensors import RuleTensors

log = logging.getLogger(__name__)
metrics_log = logging.getLogger("dogbreed.metrics")

# The flags recorded in the artifact as the job's hyperparameters.
HYPERPARAMETERS = (
    "model", "pretrained", "freeze_backbone", "epochs", "batch_size", "learning_rate", "optimizer",
    "momentum", "weight_decay", "image_size", "seed", "patience", "amp", "int8", "int8_calibration_images",
    "int8_max_accuracy_drop", "int8_min_agreement", "recompute_bn_stats",
)


@dataclass
class EpochProgress:
    """How far a training epoch got: kept in a checkpoint when a stop signal ends the job mid-epoch."""

    epoch: int
    batches: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived; the job stopped at a batch boundary and saved a checkpoint there."""

    def __init__(self, signum: int, where: str):
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"{self.signal_name} {where}")


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
    batch boundary lets the job checkpoint that step and resume from it exactly.
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


def select_device(name: str, group: Group = Group()) -> torch.device:
    if group.backend == "nccl":
        return torch.device("cuda", group.local_rank)
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
    def __init__(self, args: Namespace, data: DatasetSplits, device: torch.device, hook: DebugHook,
                 group: Group = Group()):
        self.args = args
        self.group = group
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
        # Every rank trains at the precision rank 0 measured to be faster: they must agree.
        self.precision = group.from_main(choose_precision(args.amp, device, self.model, self.criterion,
                                                          args.image_size, self.num_classes))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.enabled and device.type == "cuda")
        hook.register(self.model, self.criterion)
        self.rule_tensors = RuleTensors(self.model, hook)
        # Training steps go through DDP (gradients averaged over the ranks); evaluation, on rank 0 alone, and
        # everything that reads or saves weights use the plain model inside it.
        self.train_model = (DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None)
                            if group.active else self.model)
        self.loaders = self._make_loaders()
        self.timer = StepTimer()
        # Measured only with the hook on: the report that shows them comes with it.
        self.update_ratios = UpdateRatios(self.model, args.debug_save_interval) if hook.enabled else None
        self.recompute_batchnorm = recomputes_batchnorm(args.model, args.recompute_bn_stats, args.freeze_backbone)
        if self.recompute_batchnorm:
            log.info("BatchNorm statistics are recomputed on %d training images before each evaluation",
                     min(BATCHNORM_STATS_IMAGES, len(data.splits["train"].samples)))

    def _make_loaders(self) -> dict[str, DataLoader]:
        args = self.args
        draft = resize_size(args.image_size)
        common = dict(batch_size=args.batch_size, num_workers=args.workers, worker_init_fn=own_process_group,
                      pin_memory=self.device.type == "cuda", persistent_workers=args.workers > 0)
        train_set = ImageFileDataset(self.data.splits["train"].samples, train_transform(args.image_size), draft)
        self.train_order = SeededEpochOrder(len(train_set), args.seed, self.group.world_size, self.group.rank)
        # Its own generator: worker seeds are drawn from it, not from the global one that dropout uses.
        loaders = {"train": DataLoader(train_set, sampler=self.train_order, generator=torch.Generator(),
                                       drop_last=len(train_set) > args.batch_size, **common)}
        for split in ("valid", "test"):
            dataset = ImageFileDataset(self.data.splits[split].samples, eval_transform(args.image_size), draft)
            loaders[split] = DataLoader(dataset, shuffle=False, generator=torch.Generator(), **common)
        return loaders

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.enabled)

    def train_one_epoch(self, progress: EpochProgress, stop: dict) -> EpochProgress:
        """Train from ``progress`` (a fresh epoch, or one resumed mid-way) to the epoch's end.

        A stop signal ends it at the next batch boundary with :class:`Interrupted`; ``progress`` then says how
        far it got.
        """
        epoch = progress.epoch
        set_train_mode(self.model, self.args.model, self.args.freeze_backbone)
        self.hook.train()
        self.train_order.set_epoch(epoch, start=progress.batches * self.args.batch_size)
        loader = self.loaders["train"]
        bar = Progress(loader, total=progress.batches + len(loader), initial=progress.batches,
                       desc=f"epoch {epoch}/{self.args.epochs} train", log_every=self.args.log_interval)
        self.timer.resume()
        for images, targets in bar:
            self.timer.batch_ready()
            signum = self.group.stop_signal(stop["signal"])
            if signum is not None:
                raise Interrupted(signum, f"in epoch {epoch} after step {progress.batches}")
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                outputs = self.train_model(images)
                self.rule_tensors.save_labels(targets, outputs)
                loss = self.criterion(outputs, targets)
            self.scaler.scale(loss).backward()
            if self.update_ratios is not None:
                self.update_ratios.before_step()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.rule_tensors.save_gradient_percentiles()
            if self.update_ratios is not None:
                self.update_ratios.after_step()
            progress.batches += 1
            progress.loss_sum += loss.item() * targets.size(0)
            progress.correct += int((outputs.argmax(1) == targets).sum())
            progress.seen += targets.size(0)
            self.timer.step_done(epoch, targets.size(0))  # loss.item() above waited for the device
            bar.set_postfix(loss=progress.loss_sum / progress.seen, acc=progress.correct / progress.seen)
        signum = self.group.stop_signal(stop["signal"])
        if signum is not None:
            raise Interrupted(signum, f"at the end of epoch {epoch}'s training steps")
        return progress

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
                self.rule_tensors.save_labels(targets, outputs)
                loss = self.criterion(outputs, targets)
            total_loss += loss.item() * targets.size(0)
            all_targets.append(targets.cpu())
            all_predictions.append(outputs.argmax(1).cpu())
        targets_t = torch.cat(all_targets)
        predictions_t = torch.cat(all_predictions)
        n = max(len(targets_t), 1)
        return EvalResult(total_loss / n, float((targets_t == predictions_t).sum()) / n, targets_t, predictions_t)

    def validate(self, desc: str) -> dict[str, float]:
        """Validation loss and accuracy of the current weights (BatchNorm statistics refreshed first if due)."""
        self.refresh_batchnorm_stats()
        val = self.evaluate("valid", desc)
        return {"val_loss": val.loss, "val_accuracy": val.accuracy}

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


@dataclass
class TrainingState:
    """What a checkpoint carries besides the model, optimizer and scaler."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "val_accuracy": -1.0, "val_loss": float("inf"), "state": None})
    stale_epochs: int = 0
    stopped_early: bool = False
    epochs_done: int = 0
    partial: EpochProgress | None = None  # the epoch a stop signal interrupted

    def record_epoch(self, row: dict[str, float], model: nn.Module, patience: int, epochs: int) -> None:
        """Add a finished epoch: history, the best weights so far, early stopping."""
        self.history.append(row)
        self.epochs_done, self.partial = int(row["epoch"]), None
        if row["val_accuracy"] > self.best["val_accuracy"]:
            self.best = {"epoch": self.epochs_done, "val_accuracy": row["val_accuracy"], "val_loss": row["val_loss"],
                         "state": copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})}
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        if patience and self.stale_epochs >= patience and self.epochs_done < epochs:
            self.stopped_early = True
            log.info("early stopping: no val_accuracy gain for %d epoch(s)", self.stale_epochs)


def checkpoint_of(trainer: Trainer, state: TrainingState) -> dict[str, Any]:
    """The checkpoint: enough to continue exactly, mid-epoch included (the global RNG drives dropout)."""
    rng = {"torch": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"identity": trainer.identity(), "epoch": state.epochs_done, "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(), "scaler": trainer.scaler.state_dict(),
            "history": state.history, "best": state.best, "stale_epochs": state.stale_epochs,
            "stopped_early": state.stopped_early, "partial": asdict(state.partial) if state.partial else None,
            "rng": rng}


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
    state = TrainingState(history=checkpoint["history"], best=checkpoint["best"],
                          stale_epochs=checkpoint["stale_epochs"], stopped_early=checkpoint["stopped_early"],
                          epochs_done=checkpoint["epoch"], partial=EpochProgress(**partial) if partial else None)
    if state.partial is not None and not group.is_main:
        # The checkpoint's running sums are all ranks' together; rank 0 carries them, the others add from zero.
        state.partial = EpochProgress(state.partial.epoch, state.partial.batches)
    if state.partial is None:
        log.info("resuming from checkpoint %s after epoch %d", directory, state.epochs_done)
    else:
        log.info("resuming from checkpoint %s in epoch %d after step %d", directory, state.partial.epoch,
                 state.partial.batches)
    return state


def train_epochs(trainer: Trainer, state: TrainingState, stop: dict) -> None:
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
        row = {"epoch": epoch, "train_loss": progress.loss_sum / max(progress.seen, 1),
               "train_accuracy": progress.correct / max(progress.seen, 1), **group.from_main(
                   trainer.validate(f"epoch {epoch}/{args.epochs} valid") if group.is_main else None)}
        metrics_log.info(format_metrics(**row))
        elapsed = time.monotonic() - started
        log.info("epoch %d took %.1fs (%.1f train images/s)", epoch, elapsed, progress.seen / elapsed)
        state.record_epoch(row, trainer.model, args.patience, args.epochs)
        if group.is_main:
            save_checkpoint(args.checkpoint_dir, checkpoint_of(trainer, state))
        signum = group.stop_signal(stop["signal"])
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
        log.info("%s: %d images in %d classes (%s)", split, len(data.splits[split].samples),
                 len(data.class_folders), data.splits[split].root)
    metrics_log.disabled = not group.is_main  # the tuning job's regexes read one set of metric lines
    hook = (create_hook(args.debug_out_dir, args.debug_save_interval, args.debug_collections, args.debug_hook)
            if group.is_main else DebugHook())
    log.info("device %s, model %s, pretrained=%s, freeze_backbone=%s, amp=%s", device, args.model,
             args.pretrained, args.freeze_backbone, args.amp)
    trainer = Trainer(args, data, device, hook, group)
    state = resume(trainer, args.checkpoint_dir)
    with stop_on_signals() as stop, SystemSampler(device) as sampler:
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
    write_reports(args.output_data_dir, data, state.history, final, test, labels, state.stopped_early,
                  onnx_section)
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
    except Exception as exc:  # noqa: BLE001 - insights must not fail a finished job
        log.warning("could not build the training insights from %s: %s: %s", trial_dir, type(exc).__name__, exc)


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
