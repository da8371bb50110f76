"""The instruments' interface: members are called in their order at each point of a step; None members are off."""

from __future__ import annotations

from dogbreed.training.debugger import DebugHook
from dogbreed.training.instruments import Instrument, Instruments
from dogbreed.training.profile import StepTimer


class Recorder(Instrument):
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def start_training(self, epoch):
        self.calls.append((self.name, "start_training", epoch))

    def forward_done(self, targets, outputs):
        self.calls.append((self.name, "forward_done", targets, outputs))

    def after_update(self):
        self.calls.append((self.name, "after_update"))


def test_members_hear_each_point_in_their_order_and_none_is_left_out():
    calls: list = []
    instruments = Instruments(Recorder("a", calls), None, Recorder("b", calls))
    instruments.start_training(3)
    instruments.batch_ready()  # neither overrides it: nothing happens
    instruments.forward_done("t", "o")
    instruments.after_update()
    assert calls == [
        ("a", "start_training", 3),
        ("b", "start_training", 3),
        ("a", "forward_done", "t", "o"),
        ("b", "forward_done", "t", "o"),
        ("a", "after_update"),
        ("b", "after_update"),
    ]
    assert len(instruments.members) == 2


def test_a_hook_follows_the_passes_and_a_missing_one_does_nothing():
    modes = []

    class FakeSmdebug:
        def set_mode(self, mode):
            modes.append(mode)

    class Modes:
        TRAIN, EVAL, PREDICT = "train", "eval", "predict"

    hook = DebugHook(FakeSmdebug(), Modes)
    hook.start_training(1)
    hook.start_evaluation("valid")
    hook.start_evaluation("test")
    assert modes == ["train", "eval", "predict"]
    DebugHook().start_training(1)  # no hook: no error, nothing to set


def test_the_timer_starts_its_wait_afresh_when_training_resumes():
    timer = StepTimer()
    timer._mark = 0.0  # as if the last mark were long ago (validation ran since)
    timer.start_training(2)
    timer.batch_ready()
    timer.step_done(2, 8)
    assert timer.steps[0]["data_s"] < 1 and timer.steps[0]["epoch"] == 2
