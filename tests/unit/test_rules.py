"""The rules that read rule_tensors.py's tensors, on real smdebug trials written by a small network.

Each case trains a four-layer ReLU network through the project's hook (``create_hook``, ``RuleTensors``),
reads the trial back with smdebug and runs every rule on it: a sound network trips none of these rules, and
each deliberately broken one trips the rule that names its fault.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dogbreed.training.debugger import create_hook
from dogbreed.training.rule_tensors import RuleTensors
from dogbreed.training.rules import run_rules

CLASSES, FEATURES, BATCH = 4, 8, 32


def network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.ReLU(inplace=True),
        nn.Linear(32, 32),
        nn.ReLU6(),
        nn.Linear(32, CLASSES),
    )


def batches(steps: int, labels_of=lambda y: y):
    """Separable data, every class 8 times in each batch: feature ``y`` is raised for class ``y``."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        y = labels_of(torch.arange(BATCH) % CLASSES)
        x = torch.randn(BATCH, FEATURES, generator=generator)
        x[torch.arange(BATCH), y] += 3.0
        yield x, y


def trial_of(tmp_path, model: nn.Module, steps: int = 100, labels_of=lambda y: y, eval_labels_of=lambda y: y):
    from smdebug.trials import create_trial

    hook = create_hook(tmp_path / "tensors", save_interval=10, collections=["losses", "weights", "gradients"])
    criterion = nn.CrossEntropyLoss()
    hook.register(model, criterion)
    saved = RuleTensors(model, hook)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hook.train()
    for x, y in batches(steps, labels_of):
        outputs = model(x)
        saved.save_labels(y, outputs)
        criterion(outputs, y).backward()
        optimizer.step()
        saved.save_gradient_percentiles()
        optimizer.zero_grad()
    hook.eval()
    with torch.no_grad():
        for x, y in batches(4):
            y = eval_labels_of(y)
            outputs = model(x)
            saved.save_labels(y, outputs)
            criterion(outputs, y)
    hook.close()
    return create_trial(str(tmp_path / "tensors"))


def verdicts(trial) -> dict:
    return {r.rule: r for r in run_rules(trial)}


NEW_RULES = ("PoorWeightInitialization", "DeadRelu", "ClassImbalance")


def test_the_rule_inputs_are_saved_under_names_the_built_in_regexes_match(tmp_path):
    trial = trial_of(tmp_path, network())
    inputs = trial.tensor_names(regex=".*relu_input")
    assert inputs == ["1#1/relu_input", "3#1/relu_input", "5#1/relu_input"]
    assert len(trial.tensor_names(regex=".*relu_output")) == 3
    # Saved on the interval's training steps only, and filed under the step they describe.
    assert trial.tensor(inputs[0]).steps() == list(range(0, 100, 10))
    assert trial.tensor("0/gradient_percentiles").steps() == list(range(0, 100, 10))
    low, high = trial.tensor("0/gradient_percentiles").value(0)
    assert low < 0 < high
    # None of them is taken for a weight, bias or gradient by smdebug's default collections.
    for collection in ("weights", "biases", "gradients"):
        assert not [n for n in trial.tensor_names(collection=collection) if "relu" in n or "percentiles" in n]
    assert len(trial.tensor("labels").steps()) == 104  # 100 training steps and 4 validation steps
    assert trial.tensor("predictions").value(0).shape == (BATCH,)


def test_a_sound_network_trips_none_of_them(tmp_path):
    results = verdicts(trial_of(tmp_path, network()))
    for name in NEW_RULES:
        assert results[name].triggered is False, (name, results[name])
        assert results[name].evaluated_steps > 0 and results[name].error is None, name
    assert results["ClassImbalance"].parameters["samples"] == 200  # 50 labels for each of 4 classes


def test_all_zero_weights_trip_poor_weight_initialization_at_the_first_step(tmp_path):
    model = network()
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
    result = verdicts(trial_of(tmp_path, model))["PoorWeightInitialization"]
    assert result.triggered and result.step == 0
    assert result.details["loss_stalled"] is True
    assert result.details["activation_variance_ratio"] == "inf"
    assert result.details["narrowest_gradient_range"] == 0.0


def test_a_layer_whose_units_never_fire_trips_dead_relu(tmp_path):
    model = network()
    nn.init.constant_(model[2].bias, -1000.0)  # the second ReLU's inputs are all far below zero
    result = verdicts(trial_of(tmp_path, model))["DeadRelu"]
    assert result.triggered and result.step == 0
    assert result.details == {"site": "3#1/relu_output", "dead_percent": 100.0}


def test_a_rare_class_trips_class_imbalance_once_enough_labels_are_seen(tmp_path):
    def mostly_class_zero(y):
        y = torch.zeros_like(y)
        y[0] = 3  # one label in 32 is class 3: 31 times rarer than class 0
        return y

    result = verdicts(trial_of(tmp_path, network(), labels_of=mostly_class_zero))["ClassImbalance"]
    assert result.triggered
    assert result.parameters["samples"] == 100  # two classes seen
    assert result.step == 3  # the step whose labels brought the count to 100
    assert result.details["largest_class"] == 124 and result.details["smallest_class"] == 4


def test_a_class_mostly_mispredicted_in_validation_trips_class_imbalance_at_the_last_pass(tmp_path):
    def swap_one_and_two(y):
        """Validation labels that call class 2 images class 1 and the reverse: the model is right, the labels
        say it is wrong for every image of both classes."""
        return torch.where(y == 1, 2, torch.where(y == 2, 1, y))

    result = verdicts(trial_of(tmp_path, network(), eval_labels_of=swap_one_and_two))["ClassImbalance"]
    assert result.triggered and result.step == 103  # the last of the 4 validation steps after 100 training steps
    assert result.details == {"class": 1, "mispredicted": 32, "of": 32}


@pytest.mark.parametrize("regex", [".*relu_output", ".*relu_output,.*ReLU_output"])
def test_dead_relu_takes_the_built_in_regex_parameter(tmp_path, regex):
    from smdebug.exceptions import RuleEvaluationConditionMet
    from smdebug.rules.rule_invoker import invoke_rule

    from dogbreed.training.rule_library import DeadRelu as dead_relu

    model = network()
    nn.init.constant_(model[0].bias, -1000.0)
    trial = trial_of(tmp_path, model)
    with pytest.raises(RuleEvaluationConditionMet):
        invoke_rule(dead_relu(trial, tensor_regex=regex), start_step=0, end_step=101, raise_eval_cond=True)
    quiet = dead_relu(trial, tensor_regex=".*no_such_tensor")
    invoke_rule(quiet, start_step=0, end_step=101, raise_eval_cond=True)
    assert quiet.evaluated == 0


def test_boolean_rule_parameters_are_read_as_sagemaker_sends_them(tmp_path):
    """Rule parameters arrive as strings: "False" is False, and a word that is neither is a clear error."""
    from dogbreed.errors import ConfigError
    from dogbreed.training.rule_library import ClassImbalance, ExplodingTensor

    trial = trial_of(tmp_path, network(), steps=20)
    assert ExplodingTensor(trial, only_nan="False").only_nan is False
    assert ExplodingTensor(trial, only_nan="true").only_nan is True
    assert ClassImbalance(trial, argmax="False").argmax is False
    with pytest.raises(ConfigError, match="only_nan"):
        ExplodingTensor(trial, only_nan="sometimes")
