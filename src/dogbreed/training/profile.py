"""A light training profile: step time split into waiting for data and computing, and system use over time.

It replaces the framework profiling AWS deprecated for PyTorch 2.x with what answers the usual questions (is
the input pipeline the bottleneck? is the CPU or GPU busy?) at almost no cost: two clock reads per step and a
background thread that samples psutil (and torch.cuda when there is a GPU) once a second.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from dogbreed.training.instruments import Instrument
from dogbreed.training.reports import write_json

PROFILE_FILE = "profile.json"
UPDATES_FILE = "weight_updates.json"
MIN_NORM = 1e-6


class SystemSampler:
    """Samples CPU use, memory and (on CUDA) GPU memory and utilisation every ``interval`` seconds."""

    def __init__(self, device: torch.device, interval: float = 1.0):
        self.device, self.interval = device, interval
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="profile-sampler", daemon=True)
        self._process = psutil.Process()
        self.started = time.monotonic()

    def __enter__(self) -> SystemSampler:
        psutil.cpu_percent()  # the first call only sets the baseline
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _memory_mb(self) -> float:
        """Resident memory of this process and its children (DataLoader workers)."""
        total = 0
        for process in [self._process, *self._process.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20

    def sample(self) -> dict[str, float]:
        row = {
            "t": round(time.monotonic() - self.started, 2),
            "cpu_percent": psutil.cpu_percent(),
            "memory_mb": round(self._memory_mb(), 1),
        }
        if self.device.type == "cuda":
            row["gpu_memory_mb"] = round(torch.cuda.memory_allocated(self.device) / 2**20, 1)
            with contextlib.suppress(Exception):
                row["gpu_percent"] = float(torch.cuda.utilization(self.device))
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.sample())


class StepTimer(Instrument):
    """Per training step: seconds waiting for the batch, seconds computing, and the batch size."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []
        self.started = time.monotonic()
        self._mark = time.perf_counter()

    def batch_ready(self) -> None:
        now = time.perf_counter()
        self._data, self._mark = now - self._mark, now

    def step_done(self, epoch: int, images: int) -> None:
        now = time.perf_counter()
        self.steps.append(
            {
                "t": round(time.monotonic() - self.started, 3),
                "epoch": epoch,
                "data_s": round(self._data, 5),
                "compute_s": round(now - self._mark, 5),
                "images": images,
            }
        )
        self._mark = now

    def resume(self) -> None:
        """Start timing the next wait afresh (after validation, which is not a training step)."""
        self._mark = time.perf_counter()

    def start_training(self, epoch: int) -> None:
        self.resume()


def summary(steps: list[dict[str, float]]) -> dict[str, Any]:
    data = sum(s["data_s"] for s in steps)
    compute = sum(s["compute_s"] for s in steps)
    images = sum(s["images"] for s in steps)
    total = data + compute
    return {
        "steps": len(steps),
        "data_wait_s": round(data, 3),
        "compute_s": round(compute, 3),
        "data_wait_share": round(data / total, 4) if total else None,
        "images_per_s": round(images / total, 2) if total else None,
    }


def write_profile(output_dir: Path, timer: StepTimer, sampler: SystemSampler) -> Path:
    return write_json(
        output_dir,
        PROFILE_FILE,
        {
            "summary": summary(timer.steps),
            "device": str(sampler.device),
            "steps": timer.steps,
            "system": sampler.samples,
        },
        indent=None,
    )


class UpdateRatios(Instrument):
    """Per layer, ||w_after - w_before|| / ||w_before|| of one optimizer step, every ``interval`` steps.

    The trial holds weight reductions, not whole tensors, so the ratio is measured here, around the step:
    a copy of the trainable weights before it, one subtraction after. Around 1e-3 is the usual healthy
    order of magnitude; far below means the layer barely learns, far above that it is being thrown about.
    """

    def __init__(self, model: torch.nn.Module, interval: int):
        self.model, self.interval = model, interval
        self.rows: list[dict[str, Any]] = []
        self.step = 0
        self._before: dict[str, torch.Tensor] | None = None

    def before_step(self) -> None:
        if self.step % self.interval == 0:
            self._before = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def before_update(self) -> None:
        self.before_step()

    def after_update(self) -> None:
        self.after_step()

    def after_step(self) -> None:
        if self._before is not None:
            parameters = dict(self.model.named_parameters())
            with torch.no_grad():
                # A layer whose weights are (still) about zero, like a fresh BatchNorm bias, has no ratio.
                norms = {name: before.norm() for name, before in self._before.items()}
                layers = {
                    name: float((parameters[name] - before).norm() / norms[name])
                    for name, before in self._before.items()
                    if norms[name] > MIN_NORM
                }
            self.rows.append({"step": self.step, "layers": layers})
            self._before = None
        self.step += 1


def write_update_ratios(output_dir: Path, ratios: UpdateRatios) -> Path:
    return write_json(output_dir, UPDATES_FILE, {"interval": ratios.interval, "steps": ratios.rows}, indent=None)
