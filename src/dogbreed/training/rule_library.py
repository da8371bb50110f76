"""The Debugger rules, one class per built-in rule, on smdebug's rule framework (``smdebug.rules.Rule``).

Imported only when rules run (smdebug is slow to import): ``rules.run_rules`` is the way in. Each class takes
the parameters the SageMaker developer guide documents for its built-in rule, with the defaults it gives;
where this project departs from them, the class says so.
"""

from __future__ import annotations

import math

import numpy as np
from smdebug.core.modes import ModeKeys
from smdebug.rules.rule import Rule

from dogbreed.errors import ConfigError
from dogbreed.settings import parse_bool


def loss_names(trial) -> list[str]:
    return trial.tensor_names(collection="losses")


def mode_losses(trial, mode) -> list[tuple[int, float]]:
    """(global step, loss) of ``mode``, averaged over the loss tensors, in step order."""
    values: dict[int, list[float]] = {}
    for name in loss_names(trial):
        tensor = trial.tensor(name)
        for mode_step in tensor.steps(mode=mode):
            global_step = trial.global_step(mode, mode_step)
            values.setdefault(global_step, []).append(float(np.mean(tensor.value(mode_step, mode=mode))))
    return [(step, float(np.mean(v))) for step, v in sorted(values.items())]


def _by_step(trial, names) -> dict[int, list]:
    """The tensors ``names`` by the global steps they were saved at, indexed once per rule."""
    index: dict[int, list] = {}
    for name in names:
        tensor = trial.tensor(name)
        for step in tensor.steps():
            index.setdefault(step, []).append(tensor)
    return index


def rule_flag(value, name: str) -> bool:
    """A boolean rule parameter: SageMaker passes rule parameters as strings, so "False" must mean False."""
    parsed = parse_bool(value)
    if parsed is None:
        raise ConfigError(f"rule parameter {name} must be true or false, got {value!r}")
    return parsed


def tensors_by_step(trial, collections: list[str]) -> dict[int, list]:
    """The tensors of ``collections`` by the global steps they were saved at. Read directly, not through the
    rule's required tensors: those fetch whole values, and weights and gradients are saved as reductions."""
    return _by_step(trial, [name for collection in collections for name in trial.tensor_names(collection=collection)])


def matching_by_step(trial, regex: str) -> dict[int, list]:
    """The tensors whose names match ``regex`` (smdebug's search semantics, as the built-in rules' regex
    parameters), by the global steps they were saved at."""
    return _by_step(trial, trial.tensor_names(regex=[r for r in str(regex).split(",") if r]) if regex else [])


def channel_activity(value: np.ndarray) -> np.ndarray:
    """Per channel, the share of outputs above zero: saved as such by rule_tensors.py (one dimension), or
    computed from a whole ReLU output that a Debugger config's own collection saved (N, C, ...)."""
    if value.ndim <= 1:
        return value.ravel()
    return np.mean(np.moveaxis(value > 0, 1, 0).reshape(value.shape[1], -1), axis=1)


def saved_variance(value: np.ndarray) -> float:
    """A ReLU input's variance: saved as such by rule_tensors.py (one value), or of a whole saved input."""
    return float(value.ravel()[0]) if value.size == 1 else float(np.var(value))


def first_train_steps(trial, steps: int) -> set[int]:
    """The global steps of the first ``steps`` training steps."""
    return {trial.global_step(ModeKeys.TRAIN, s) for s in trial.steps(mode=ModeKeys.TRAIN)[:steps]}


def values_by_mode(trial, name: str, mode) -> list[tuple[int, np.ndarray]]:
    """(global step, value) of the saved tensor ``name`` in ``mode``, in step order."""
    tensor = trial.tensor(name)
    return [
        (trial.global_step(mode, s), np.asarray(tensor.value(s, mode=mode)).ravel()) for s in tensor.steps(mode=mode)
    ]


class LossNotDecreasing(Rule):
    """Fires when the mean training loss of the last ``num_steps`` steps is not at least ``diff_percent``
    percent below the mean of the ``num_steps`` before them, or rose more than
    ``increase_threshold_percent`` percent. Windows whose mean is already below ``converged_fraction`` of
    the first window's are not judged: a converged loss has nowhere to fall (this guard is this project's;
    the other parameters are the built-in rule's)."""

    def __init__(
        self, base_trial, num_steps=10, diff_percent=0.1, increase_threshold_percent=5.0, converged_fraction=0.25
    ):
        super().__init__(base_trial, action_str="")
        self.num_steps, self.diff_percent = int(num_steps), float(diff_percent)
        self.increase_threshold_percent = float(increase_threshold_percent)
        self.converged_fraction = float(converged_fraction)
        self.losses = mode_losses(base_trial, ModeKeys.TRAIN)
        self._index = {s: i for i, (s, _) in enumerate(self.losses)}
        self._first_window = float(np.mean([v for _, v in self.losses[: self.num_steps]])) if self.losses else 0.0
        self.evaluated = 0

    def invoke_at_step(self, step):
        index = self._index.get(step)
        if index is None or (index + 1) % self.num_steps:
            return False
        self.evaluated += 1
        window = [v for _, v in self.losses[index + 1 - self.num_steps : index + 1]]
        # The first window is held against the first loss, so a loss that blows up at once is caught.
        before = [v for _, v in self.losses[max(index + 1 - 2 * self.num_steps, 0) : index + 1 - self.num_steps]]
        current, previous = float(np.mean(window)), float(np.mean(before or [self.losses[0][1]]))
        if not math.isfinite(current):
            return True
        if current < self.converged_fraction * self._first_window:
            return False
        if current > previous * (1 + self.increase_threshold_percent / 100):
            return True
        return current > previous * (1 - self.diff_percent / 100)


class Overfit(Rule):
    """Fires when validation loss exceeds training loss by more than ``ratio_threshold`` of the training loss
    at ``patience`` successive validation passes, from ``start_step`` on. ``patience`` is 2 here, not the
    built-in rule's 1: on small data the first pass alone, before BatchNorm and the head have settled,
    often sits far above training loss and is gone by the next."""

    def __init__(self, base_trial, start_step=0, patience=2, ratio_threshold=0.1):
        super().__init__(base_trial, action_str="")
        self.start_step, self.patience = int(start_step), int(patience)
        self.ratio_threshold = float(ratio_threshold)
        self.train = mode_losses(base_trial, ModeKeys.TRAIN)
        self.valid = mode_losses(base_trial, ModeKeys.EVAL)
        self.passes = _passes(self.valid)
        self.strikes = 0
        self.evaluated = 0

    def invoke_at_step(self, step):
        if step < self.start_step or step not in self.passes:
            return False
        recent_train = [v for s, v in self.train if s < step][-10:]
        if not recent_train:
            return False
        self.evaluated += 1
        train, valid = float(np.mean(recent_train)), self.passes[step]
        self.strikes = self.strikes + 1 if valid - train > self.ratio_threshold * max(train, 1e-12) else 0
        return self.strikes >= self.patience


class Overtraining(Rule):
    """Fires when validation loss has not improved by ``delta`` for ``patience_validation`` validation passes
    while training loss kept falling (training past the point that helps)."""

    def __init__(self, base_trial, patience_validation=10, delta=0.01):
        super().__init__(base_trial, action_str="")
        self.patience_validation, self.delta = int(patience_validation), float(delta)
        self.passes = _passes(mode_losses(base_trial, ModeKeys.EVAL))
        self.best, self.stale, self.evaluated = math.inf, 0, 0

    def invoke_at_step(self, step):
        if step not in self.passes:
            return False
        self.evaluated += 1
        value = self.passes[step]
        if value < self.best - self.delta:
            self.best, self.stale = value, 0
        else:
            self.stale += 1
        return self.stale >= self.patience_validation


class VanishingGradient(Rule):
    """Fires when the mean absolute gradient of some layer falls below ``threshold``."""

    def __init__(self, base_trial, threshold=1e-7):
        super().__init__(base_trial, action_str="")
        self.threshold = float(threshold)
        self.evaluated = 0
        self._saved = tensors_by_step(base_trial, ["gradients"])

    def invoke_at_step(self, step):
        tensors = self._saved.get(step, [])
        if tensors:
            self.evaluated += 1
        return any(t.reduction_value(step, "mean", abs=True) < self.threshold for t in tensors)


class ExplodingTensor(Rule):
    """Fires on a NaN or infinite loss, gradient or weight (``only_nan``: NaN only)."""

    def __init__(self, base_trial, collection_names="losses,gradients,weights", only_nan=False):
        super().__init__(base_trial, action_str="")
        self.collection_names = [c for c in str(collection_names).split(",") if c]
        self.only_nan = rule_flag(only_nan, "only_nan")
        self.evaluated = 0
        self._saved = tensors_by_step(base_trial, self.collection_names)

    def _bad(self, value: float) -> bool:
        return math.isnan(value) if self.only_nan else not math.isfinite(value)

    def invoke_at_step(self, step):
        found = False
        for tensor in self._saved.get(step, []):
            self.evaluated += 1
            try:
                value = float(np.max(np.abs(tensor.value(step))))
            except Exception:
                value = float(tensor.reduction_value(step, "max", abs=True))
            found = found or self._bad(value)
        return found


class DeadRelu(Rule):
    """Fires when, at some step, more than ``threshold_layer`` percent of one ReLU site's units (channels)
    were active (output above zero) for less than ``threshold_inactivity`` percent of their outputs."""

    def __init__(self, base_trial, tensor_regex=".*relu_output", threshold_inactivity=1.0, threshold_layer=50.0):
        super().__init__(base_trial, action_str="")
        self.tensor_regex = str(tensor_regex)
        self.threshold_inactivity, self.threshold_layer = float(threshold_inactivity), float(threshold_layer)
        self._saved = matching_by_step(base_trial, self.tensor_regex)
        self.evaluated, self.details = 0, {}

    def invoke_at_step(self, step):
        tensors = self._saved.get(step, [])
        self.evaluated += bool(tensors)
        for tensor in tensors:
            activity = 100 * channel_activity(np.asarray(tensor.value(step)))
            dead = 100 * float(np.mean(activity < self.threshold_inactivity))
            if dead > self.threshold_layer:
                self.details = {"site": tensor.name, "dead_percent": round(dead, 1)}
                return True
        return False


class PoorWeightInitialization(Rule):
    """Looks at the first ``steps`` training steps. The activations or the gradients look wrong when the
    largest variance of the ReLU inputs is more than ``threshold`` times the smallest, or when some weight
    tensor's gradient spread (95th minus 5th percentile) is below ``distribution_range``. The rule fires at
    such a step when the loss confirms it: the mean of the last ``patience`` of those steps' losses is not
    below the mean of the first ``patience``, or a loss was not finite.

    How the built-in rule combines its three checks is not published. Here the loss must confirm the
    others. Networks that learn well can look wrong on either measure: a random-init ResNet18 kept frozen
    (its BatchNorm layers on their initial statistics) has ReLU input variances 24 times apart on the
    sample data, and its head still learns."""

    def __init__(
        self,
        base_trial,
        activation_inputs_regex=".*relu_input",
        threshold=10.0,
        distribution_range=0.001,
        patience=5,
        steps=10,
    ):
        super().__init__(base_trial, action_str="")
        self.activation_inputs_regex = str(activation_inputs_regex)
        self.threshold, self.distribution_range = float(threshold), float(distribution_range)
        self.patience, self.steps = int(patience), int(steps)
        window = first_train_steps(base_trial, self.steps)
        inputs = matching_by_step(base_trial, self.activation_inputs_regex)
        spreads = matching_by_step(base_trial, ".*gradient_percentiles$")
        self._inputs = {s: t for s, t in inputs.items() if s in window}
        self._spreads = {s: t for s, t in spreads.items() if s in window}
        self.loss_stalled = self._loss_stalled([v for s, v in mode_losses(base_trial, ModeKeys.TRAIN) if s in window])
        self.evaluated, self.details = 0, {}

    def _loss_stalled(self, losses: list[float]) -> bool:
        """The mean of the window's last ``patience`` losses is not below that of its first (a step's loss
        is too noisy to compare one by one), or a loss is not finite."""
        if not all(math.isfinite(v) for v in losses):
            return True
        span = min(self.patience, len(losses) // 2)
        return span > 0 and float(np.mean(losses[-span:])) >= float(np.mean(losses[:span]))

    def invoke_at_step(self, step):
        inputs, spreads = self._inputs.get(step, []), self._spreads.get(step, [])
        if not inputs and not spreads:
            return False
        self.evaluated += 1
        variances = [saved_variance(np.asarray(t.value(step))) for t in inputs]
        ratio = (max(variances) / min(variances) if min(variances) > 0 else math.inf) if variances else 0.0
        ranges = {t.name: float(np.ptp(np.asarray(t.value(step)))) for t in spreads}
        narrowest = min(ranges, key=ranges.__getitem__) if ranges else None
        details = {
            "activation_variance_ratio": ratio if math.isfinite(ratio) else "inf",
            "narrowest_gradient": narrowest,
            "narrowest_gradient_range": ranges.get(narrowest),
            "loss_stalled": self.loss_stalled,
        }
        self.details = self.details or details
        wrong = ratio > self.threshold or (narrowest is not None and ranges[narrowest] < self.distribution_range)
        if wrong and self.loss_stalled:
            self.details = details
            return True
        return False


class ClassImbalance(Rule):
    """Two checks. Once ``samples`` training labels have been seen, fires when the most frequent class
    among them is more than ``threshold_imbalance`` times as frequent as the least frequent. At the last
    validation pass, fires when more than ``threshold_misprediction`` of some class's validation images
    were mispredicted.

    ``samples`` defaults to 50 labels per class seen, which is the built-in rule's 500 for the ten classes
    it assumes and enough to count 133 classes fairly. Mispredictions are judged on the last pass only:
    the early passes of any run mispredict most of every class. The predictions are saved as class
    indices, so ``argmax`` stays False."""

    def __init__(
        self,
        base_trial,
        threshold_imbalance=10.0,
        threshold_misprediction=0.7,
        samples=None,
        argmax=False,
        labels_regex=".*labels",
        predictions_regex=".*predictions",
    ):
        super().__init__(base_trial, action_str="")
        self.threshold_imbalance = float(threshold_imbalance)
        self.threshold_misprediction = float(threshold_misprediction)
        self.argmax, self.labels_regex, self.predictions_regex = (
            rule_flag(argmax, "argmax"),
            labels_regex,
            predictions_regex,
        )
        labels = self._values(base_trial, labels_regex, ModeKeys.TRAIN)
        classes = {int(c) for _, v in labels for c in v}
        self.samples = int(samples) if samples is not None else 50 * max(len(classes), 1)
        self._count_step, self._counts = self._counted(labels)
        self._last_pass = self._pass_mispredictions(base_trial)
        self.evaluated, self.details = 0, {}

    def _values(self, trial, regex, mode) -> list[tuple[int, np.ndarray]]:
        names = trial.tensor_names(regex=regex)
        return values_by_mode(trial, names[0], mode) if names else []

    def _counted(self, labels):
        counts: dict[int, int] = {}
        seen = 0
        for step, value in labels:
            for label in value.astype(int):
                counts[int(label)] = counts.get(int(label), 0) + 1
            seen += len(value)
            if seen >= self.samples:
                return step, counts
        return None, counts

    def _pass_mispredictions(self, trial):
        """(last step, {class: (mispredicted, seen)}) of the last validation pass, or None."""
        labels = self._values(trial, self.labels_regex, ModeKeys.EVAL)
        predictions = dict(self._values(trial, self.predictions_regex, ModeKeys.EVAL))
        passes = _runs([s for s, _ in labels])
        if not passes:
            return None
        last = passes[-1]
        per_class: dict[int, list[int]] = {}
        for step, value in labels:
            if step not in last:
                continue
            predicted = predictions[step]
            if self.argmax:
                predicted = np.argmax(predicted.reshape(len(value), -1), axis=1)
            for label, guess in zip(value.astype(int), predicted.astype(int), strict=False):
                entry = per_class.setdefault(int(label), [0, 0])
                entry[0] += int(label != guess)
                entry[1] += 1
        return max(last), per_class

    def invoke_at_step(self, step):
        if step == self._count_step:
            self.evaluated += 1
            most, least = max(self._counts.values()), min(self._counts.values())
            if most > self.threshold_imbalance * least:
                self.details = {
                    "largest_class": most,
                    "smallest_class": least,
                    "counts": {str(k): v for k, v in sorted(self._counts.items())},
                }
                return True
        if self._last_pass is not None and step == self._last_pass[0]:
            self.evaluated += 1
            for label, (wrong, seen) in sorted(self._last_pass[1].items()):
                if wrong > self.threshold_misprediction * seen:
                    self.details = {"class": label, "mispredicted": wrong, "of": seen}
                    return True
        return False


def _runs(steps: list[int]) -> list[list[int]]:
    """Consecutive global steps grouped into runs (one validation pass each)."""
    runs: list[list[int]] = []
    for step in steps:
        if runs and step == runs[-1][-1] + 1:
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


def _passes(valid: list[tuple[int, float]]) -> dict[int, float]:
    """Validation losses grouped into passes (runs of consecutive steps): last step of a pass -> mean loss."""
    losses = dict(valid)
    return {run[-1]: float(np.mean([losses[step] for step in run])) for run in _runs(list(losses))}


RULES = [
    LossNotDecreasing,
    Overfit,
    Overtraining,
    VanishingGradient,
    ExplodingTensor,
    PoorWeightInitialization,
    DeadRelu,
    ClassImbalance,
]
