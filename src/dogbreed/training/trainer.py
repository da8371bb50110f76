"""One training process's model, data loaders and steps: a training epoch, an evaluation pass, the BatchNorm
refresh. engine.py drives it over the epochs, with checkpoints, and writes what comes out."""

from __future__ import annotations

import logging
import signal
from argparse import Namespace
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dogbreed.errors import ConfigError
from dogbreed.progress import Progress
from dogbreed.training.data import DatasetSplits, ImageFileDataset, SeededEpochOrder, own_process_group, sampled_batches
from dogbreed.training.debugger import DebugHook
from dogbreed.training.distributed import Group
from dogbreed.training.instruments import Instruments
from dogbreed.training.models import BATCHNORM_STATS_IMAGES, build_model, recomputes_batchnorm, set_train_mode
from dogbreed.training.precision import choose_precision
from dogbreed.training.profile import StepTimer, UpdateRatios
from dogbreed.training.rule_tensors import RuleTensors
from dogbreed.training.transforms import eval_transform, resize_size, train_transform

log = logging.getLogger(__name__)


@dataclass
class EpochProgress:
    """How far a training epoch got: kept in a checkpoint when a stop signal ends the job mid-epoch."""

    epoch: int
    batches: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Count one training step; ``loss.item()`` waits for the device."""
        self.batches += 1
        self.loss_sum += loss.item() * targets.size(0)
        self.correct += int((outputs.argmax(1) == targets).sum())
        self.seen += targets.size(0)

    def running(self) -> dict[str, float]:
        return {"loss": self.loss_sum / self.seen, "acc": self.correct / self.seen}


class StopRequest:
    """The stop signal (SIGTERM, SIGINT) that arrived, if any: set by a signal handler, read between batches."""

    def __init__(self) -> None:
        self.signal: int | None = None


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
        return torch.optim.SGD(params, lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    return torch.optim.Adam(params, lr=args.learning_rate, weight_decay=args.weight_decay)


class Trainer:
    def __init__(
        self, args: Namespace, data: DatasetSplits, device: torch.device, hook: DebugHook, group: Group = Group()
    ):
        self.args = args
        self.group = group
        self.data = data
        self.device = device
        self.hook = hook
        self.num_classes = len(data.class_folders)
        self.model = build_model(
            args.model,
            self.num_classes,
            pretrained=args.pretrained,
            weights_location=args.pretrained_weights,
            freeze_backbone=args.freeze_backbone,
        ).to(device)
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = make_optimizer(args, self.model.parameters())
        # Every rank trains at the precision rank 0 measured to be faster: they must agree.
        self.precision = group.from_main(
            choose_precision(args.amp, device, self.model, self.criterion, args.image_size, self.num_classes)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.enabled and device.type == "cuda")
        hook.register(self.model, self.criterion)
        self.rule_tensors = RuleTensors(self.model, hook)
        # Training steps go through DDP (gradients averaged over the ranks); evaluation, on rank 0 alone, and
        # everything that reads or saves weights use the plain model inside it.
        self.train_model = (
            DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None)
            if group.active
            else self.model
        )
        self.loaders = self._make_loaders()
        self.timer = StepTimer()
        # Measured only with the hook on: the report that shows them comes with it.
        self.update_ratios = UpdateRatios(self.model, args.debug_save_interval) if hook.enabled else None
        # In this order at each point of a step: the hook's mode, the rule tensors, the update ratios, the timer.
        self.instruments = Instruments(hook, self.rule_tensors, self.update_ratios, self.timer)
        self.recompute_batchnorm = recomputes_batchnorm(args.model, args.recompute_bn_stats, args.freeze_backbone)
        if self.recompute_batchnorm:
            log.info(
                "BatchNorm statistics are recomputed on %d training images before each evaluation",
                min(BATCHNORM_STATS_IMAGES, len(data.splits["train"].samples)),
            )

    def _make_loaders(self) -> dict[str, DataLoader]:
        args = self.args
        draft = resize_size(args.image_size)
        common = dict(
            batch_size=args.batch_size,
            num_workers=args.workers,
            worker_init_fn=own_process_group,
            pin_memory=self.device.type == "cuda",
            persistent_workers=args.workers > 0,
        )
        train_set = ImageFileDataset(self.data.splits["train"].samples, train_transform(args.image_size), draft)
        self.train_order = SeededEpochOrder(len(train_set), args.seed, self.group.world_size, self.group.rank)
        # Its own generator: worker seeds are drawn from it, not from the global one that dropout uses.
        loaders = {
            "train": DataLoader(
                train_set,
                sampler=self.train_order,
                generator=torch.Generator(),
                drop_last=len(train_set) > args.batch_size,
                **common,
            )
        }
        for split in ("valid", "test"):
            dataset = ImageFileDataset(self.data.splits[split].samples, eval_transform(args.image_size), draft)
            loaders[split] = DataLoader(dataset, shuffle=False, generator=torch.Generator(), **common)
        return loaders

    def close(self) -> None:
        """Stop the loaders' worker processes now: dropping a loader shuts its persistent workers down. Workers still
        running at exit are killed instead, and each killed one leaves its multiprocessing socket folder
        (``pymp-*``) in the temporary directory."""
        self.loaders.clear()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.enabled)

    def train_one_epoch(self, progress: EpochProgress, stop: StopRequest) -> EpochProgress:
        """Train from ``progress`` (a fresh epoch, or one resumed mid-way) to the epoch's end.

        A stop signal ends it at the next batch boundary with :class:`Interrupted`; ``progress`` then says how
        far it got.
        """
        epoch = progress.epoch
        set_train_mode(self.model, self.args.model, self.args.freeze_backbone)
        self.train_order.set_epoch(epoch, start=progress.batches * self.args.batch_size)
        loader = self.loaders["train"]
        bar = Progress(
            loader,
            total=progress.batches + len(loader),
            initial=progress.batches,
            desc=f"epoch {epoch}/{self.args.epochs} train",
            log_every=self.args.log_interval,
        )
        self.instruments.start_training(epoch)
        for images, targets in bar:
            self.instruments.batch_ready()
            self._stop_if_asked(stop, f"in epoch {epoch} after step {progress.batches}")
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            loss, outputs = self._train_step(images, targets)
            progress.add(loss, outputs, targets)
            self.instruments.step_done(epoch, targets.size(0))
            bar.set_postfix(**progress.running())
        self._stop_if_asked(stop, f"at the end of epoch {epoch}'s training steps")
        return progress

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on one batch: its loss and outputs."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            outputs = self.train_model(images)
            self.instruments.forward_done(targets, outputs)
            loss = self.criterion(outputs, targets)
        self.scaler.scale(loss).backward()
        self.instruments.before_update()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.instruments.after_update()
        return loss, outputs

    def _stop_if_asked(self, stop: StopRequest, where: str) -> None:
        """Every rank stops at the same batch boundary when any of them received a stop signal."""
        signum = self.group.stop_signal(stop.signal)
        if signum is not None:
            raise Interrupted(signum, where)

    @torch.no_grad()
    def evaluate(self, split: str, desc: str) -> EvalResult:
        self.model.eval()
        self.instruments.start_evaluation(split)
        loader = self.loaders[split]
        total_loss, all_targets, all_predictions = 0.0, [], []
        for images, targets in Progress(loader, total=len(loader), desc=desc, log_every=self.args.log_interval):
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with self._autocast():
                outputs = self.model(images)
                self.instruments.forward_done(targets, outputs)
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
            batches = sampled_batches(
                self.data.splits["train"].samples,
                BATCHNORM_STATS_IMAGES,
                args.seed,
                eval_transform(args.image_size),
                resize_size(args.image_size),
                args.batch_size,
                args.workers,
            )
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
        return sampled_batches(
            self.data.splits["train"].samples,
            args.int8_calibration_images,
            args.seed,
            eval_transform(args.image_size),
            resize_size(args.image_size),
            args.batch_size,
            args.workers,
        )

    def identity(self) -> dict[str, Any]:
        return {
            "architecture": self.args.model,
            "class_folders": list(self.data.class_folders),
            "image_size": self.args.image_size,
            "freeze_backbone": self.args.freeze_backbone,
        }
