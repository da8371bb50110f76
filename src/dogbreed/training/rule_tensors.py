"""The tensors the Debugger rules read that smdebug's hook does not save by itself.

- At every ReLU and ReLU6 call, on the steps the save interval keeps: the variance of its input
  (``<site>/relu_input``, for PoorWeightInitialization) and, per channel, the share of outputs above zero
  (``<site>/relu_output``, for DeadRelu), both over an evenly strided grid of feature-map positions.
  smdebug's own module capture cannot give these for torchvision's models: their ReLUs work in place (the
  saved input is already the output), one ReLU module serves two calls in every ResNet block, and
  MobileNetV2's ReLU6 modules have no "relu" in their names. A site is the module's
  name and its call number in the forward pass: ``layer1.0.relu#2``.
- Per weight tensor on the same steps: the 5th and 95th percentiles of its nonzero gradient values
  (``<module>/gradient_percentiles``, for PoorWeightInitialization; zeros when all are zero), from an evenly
  strided sample of at most ``PERCENTILE_SAMPLE`` values, so the cost stays small and no random numbers are
  drawn. Exact zeros are structural, not a sign of scale: on small images most taps of ResNet's last 3x3
  kernels lie over padding.
- Every training and validation step: the batch's ``labels`` and ``predictions`` (class indices, for
  ClassImbalance).

The names keep clear of smdebug's default collection patterns (``weight``, ``bias``, a ``gradient`` prefix),
so none of these tensors lands in the weights, biases or gradients collections.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dogbreed.training.debugger import RULE_INPUTS as COLLECTION
from dogbreed.training.debugger import DebugHook
from dogbreed.training.instruments import Instrument

RELU_TYPES = (nn.ReLU, nn.ReLU6)
PERCENTILE_SAMPLE = 4096
# Feature-map positions per channel and image that the ReLU statistics read: a 224-pixel ResNet's first ReLU
# has 112x112; every 7th row and column of it estimate a variance and a share as well at 1/49 of the cost.
SPATIAL_SAMPLE = 256
PERCENTILES = (0.05, 0.95)


class RuleTensors(Instrument):
    """Saves the rule inputs above through ``hook``; does nothing when the hook is off. As an instrument: the
    labels and predictions after each forward pass, the gradient percentiles after each update."""

    def __init__(self, model: nn.Module, hook: DebugHook):
        self.model, self.hook = model, hook
        self._armed = False
        self._calls: dict[str, int] = {}
        if not hook.enabled:
            return
        # Registered after the smdebug hook's own callbacks, so its step counter has moved on when these run.
        model.register_forward_pre_hook(self._start_forward)
        for name, module in model.named_modules():
            if isinstance(module, RELU_TYPES):
                module.register_forward_pre_hook(self._relu_input(name))
                module.register_forward_hook(self._relu_output(name))

    def _start_forward(self, module, inputs) -> None:
        self._armed = self.hook.saves_layers_now()
        self._calls = {}

    def _relu_input(self, name: str):
        def save(module, inputs) -> None:
            if self._armed:
                call = self._calls[name] = self._calls.get(name, 0) + 1
                # Before the module runs: an in-place ReLU overwrites its input.
                variance = _strided(inputs[0].detach()).float().var().reshape(1)
                self.hook.save(f"{name}#{call}/relu_input", variance.cpu(), COLLECTION)

        return save

    def _relu_output(self, name: str):
        def save(module, inputs, output) -> None:
            if self._armed:
                active = _strided(output.detach()) > 0
                dims = [d for d in range(active.dim()) if d != 1] if active.dim() > 1 else [0]
                self.hook.save(
                    f"{name}#{self._calls[name]}/relu_output", active.float().mean(dim=dims).cpu(), COLLECTION
                )

        return save

    def save_gradient_percentiles(self) -> None:
        """After the optimizer step (the gradients are unscaled by then) of a step the interval keeps."""
        if not self._armed:
            return
        for name, module in self.model.named_modules():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter) or weight.dim() < 2 or weight.grad is None:
                continue
            values = weight.grad.detach().flatten()
            values = values[:: max(1, values.numel() // PERCENTILE_SAMPLE)].float()
            values = values[values != 0]  # structural zeros: kernel taps over padding, units that did not fire
            quantiles = (
                torch.quantile(values, torch.tensor(PERCENTILES, device=values.device))
                if values.numel()
                else torch.zeros(len(PERCENTILES), device=values.device)
            )
            self.hook.save(f"{name}/gradient_percentiles", quantiles.cpu(), COLLECTION)

    def forward_done(self, targets: torch.Tensor, outputs: torch.Tensor) -> None:
        self.save_labels(targets, outputs)

    def after_update(self) -> None:
        self.save_gradient_percentiles()

    def save_labels(self, targets: torch.Tensor, outputs: torch.Tensor) -> None:
        """The batch's labels and predicted classes, after the forward pass and before the loss."""
        if self.hook.enabled:
            self.hook.save("labels", targets.detach().cpu(), COLLECTION)
            self.hook.save("predictions", outputs.detach().argmax(1).cpu(), COLLECTION)


def _strided(feature_map: torch.Tensor) -> torch.Tensor:
    """An evenly strided grid of at most about ``SPATIAL_SAMPLE`` positions of an (N, C, H, W) map."""
    if feature_map.dim() != 4:
        return feature_map
    stride = max(1, math.ceil(math.sqrt(feature_map.shape[2] * feature_map.shape[3] / SPATIAL_SAMPLE)))
    return feature_map[:, :, ::stride, ::stride]
