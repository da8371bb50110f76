"""Mixed precision for ``--amp``: float16 on CUDA; on CPU, bfloat16 only where it is measured to be faster.

On CPUs without AMX, torch's bfloat16 kernels can be far slower than float32
(5-15x for ResNet18, ResNet50 and MobileNetV2 on an AVX-512 machine with
bf16 but no AMX). So on CPU a few training steps are timed both ways on a
copy of the model, before training, and bfloat16 is used only when it wins.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

TRIAL_STEPS = 2
TRIAL_BATCH = 4


@dataclass(frozen=True)
class Precision:
    enabled: bool
    dtype: torch.dtype
    float32_ms: float | None = None
    bfloat16_ms: float | None = None


def _step(
    model: nn.Module, criterion: nn.Module, images: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None
) -> None:
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = criterion(model(images), targets)
    loss.backward()
    model.zero_grad(set_to_none=True)


def _ms_per_step(model, criterion, images, targets, dtype, budget_s: float = float("inf")) -> float:
    """Milliseconds per step after one warm-up step; stops early (returning the time so far) past ``budget_s``."""
    _step(model, criterion, images, targets, dtype)
    started = time.perf_counter()
    for _ in range(TRIAL_STEPS):
        _step(model, criterion, images, targets, dtype)
        if time.perf_counter() - started > budget_s:
            break
    return (time.perf_counter() - started) / TRIAL_STEPS * 1000


def choose_precision(
    requested: bool, device: torch.device, model: nn.Module, criterion: nn.Module, image_size: int, num_classes: int
) -> Precision:
    if not requested:
        return Precision(False, torch.float32)
    if device.type == "cuda":
        return Precision(True, torch.float16)
    trial = copy.deepcopy(model).train()  # a copy: the trial's batch-norm statistics and gradients go with it
    images = torch.randn(TRIAL_BATCH, 3, image_size, image_size)
    targets = torch.randint(0, num_classes, (TRIAL_BATCH,))
    float32_ms = _ms_per_step(trial, criterion, images, targets, None)
    # bfloat16 can only lose once it has taken longer than float32 took for all its steps.
    bfloat16_ms = _ms_per_step(
        trial, criterion, images, targets, torch.bfloat16, budget_s=float32_ms * TRIAL_STEPS / 1000
    )
    faster = bfloat16_ms < float32_ms
    log.info(
        "--amp on CPU: a training step takes %.1f ms in bfloat16 and %.1f ms in float32 (batch %d, %dx%d): using %s",
        bfloat16_ms,
        float32_ms,
        TRIAL_BATCH,
        image_size,
        image_size,
        "bfloat16" if faster else "float32",
    )
    return Precision(faster, torch.bfloat16, float32_ms, bfloat16_ms)
