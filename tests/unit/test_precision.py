"""--amp: the precision choice, without a GPU."""

from __future__ import annotations

import logging

import torch
from torch import nn

from dogbreed.training.precision import choose_precision


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def test_off_means_float32_and_cuda_means_float16_without_a_trial():
    model = _model()
    assert not choose_precision(False, torch.device("cpu"), model, nn.CrossEntropyLoss(), 32, 3).enabled
    cuda = choose_precision(True, torch.device("cuda"), model, nn.CrossEntropyLoss(), 32, 3)
    assert cuda.enabled and cuda.dtype == torch.float16 and cuda.float32_ms is None


def test_cpu_trial_times_both_ways_on_a_copy_and_picks_the_faster(caplog):
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="dogbreed.training.precision"):
        choice = choose_precision(True, torch.device("cpu"), model, nn.CrossEntropyLoss(), 32, 3)
    assert choice.float32_ms > 0 and choice.bfloat16_ms > 0
    assert choice.enabled == (choice.bfloat16_ms < choice.float32_ms)
    assert ("using bfloat16" if choice.enabled else "using float32") in caplog.text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the trial changed the model"
    assert all(p.grad is None for p in model.parameters())
