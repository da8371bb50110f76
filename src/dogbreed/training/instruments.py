"""What watches the training steps without changing them: the one small interface through which the smdebug
hook's modes, the rule tensors, the update ratios and the step timer plug into the trainer's loops.

The trainer calls each method at its point of a step, and :class:`Instruments` passes the call to its members
in the order they were given. Every method does nothing unless a member overrides it.
"""

from __future__ import annotations

from typing import Any


class Instrument:
    def start_training(self, epoch: int) -> None:
        """A training epoch begins (or resumes mid-way)."""

    def start_evaluation(self, split: str) -> None:
        """An evaluation pass over ``split`` (valid or test) begins."""

    def batch_ready(self) -> None:
        """The loader handed over the next training batch."""

    def forward_done(self, targets: Any, outputs: Any) -> None:
        """The model answered a batch, in training or evaluation."""

    def before_update(self) -> None:
        """Gradients are ready; the optimizer is about to step."""

    def after_update(self) -> None:
        """The optimizer stepped."""

    def step_done(self, epoch: int, images: int) -> None:
        """A training step ended, its loss read back from the device."""


class Instruments(Instrument):
    """Several instruments as one; ``None`` members (an instrument that is off) are left out."""

    def __init__(self, *members: Instrument | None):
        self.members = [m for m in members if m is not None]

    def start_training(self, epoch: int) -> None:
        for member in self.members:
            member.start_training(epoch)

    def start_evaluation(self, split: str) -> None:
        for member in self.members:
            member.start_evaluation(split)

    def batch_ready(self) -> None:
        for member in self.members:
            member.batch_ready()

    def forward_done(self, targets: Any, outputs: Any) -> None:
        for member in self.members:
            member.forward_done(targets, outputs)

    def before_update(self) -> None:
        for member in self.members:
            member.before_update()

    def after_update(self) -> None:
        for member in self.members:
            member.after_update()

    def step_done(self, epoch: int, images: int) -> None:
        for member in self.members:
            member.step_done(epoch, images)
