"""Debugger rules run locally on the saved smdebug trial, at the end of training or from ``make debug-report``.

smdebug 1.0.34 ships the rule framework (``smdebug.rules.Rule``, ``invoke_rule``) but not the built-in rules:
their implementations ran only in AWS's rule containers, which SageMaker Debugger no longer starts for new
customers. The rules here are written on that framework, one class per built-in rule, with the parameters
and the conditions the SageMaker developer guide documents for it. Each result names the rule, whether it
fired, the first global step where it did, and the parameters it ran with.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogbreed.training.reports import write_json

log = logging.getLogger(__name__)

RULES_FILE = "rules.json"


@dataclass
class RuleResult:
    rule: str
    triggered: bool
    step: int | None
    parameters: dict[str, Any]
    summary: str  # in plain words, for the report
    evaluated_steps: int = 0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _rule_classes():
    """The rule classes (imported here: smdebug is slow to import)."""
    from dogbreed.training.rule_library import RULES

    return RULES


SUMMARIES = {
    "LossNotDecreasing": ("training loss stopped falling", "training loss kept falling"),
    "Overfit": ("validation loss ran well above training loss", "validation loss stayed close to training loss"),
    "Overtraining": (
        "validation loss stopped improving for several passes",
        "validation loss kept improving (or training stopped in time)",
    ),
    "VanishingGradient": ("a layer's gradients all but vanished", "gradients stayed above the vanishing threshold"),
    "ExplodingTensor": ("a loss, gradient or weight became NaN or infinite", "no NaN or infinite values"),
    "PoorWeightInitialization": (
        "the first steps' activations or gradients looked badly scaled and the loss did not fall",
        "the loss fell over the first steps, or their activations and gradients looked sound",
    ),
    "DeadRelu": ("most units of a ReLU layer stopped firing", "the ReLU layers kept firing"),
    "ClassImbalance": (
        "the classes are badly imbalanced, or a class was mostly mispredicted",
        "the classes are balanced and each was mostly predicted right",
    ),
}


def _parameters(rule) -> dict[str, Any]:
    """The constructor's parameters with the values the rule ran with."""
    names = [n for n in inspect.signature(type(rule).__init__).parameters if n not in ("self", "base_trial")]
    return {n: getattr(rule, n) for n in names}


def run_rules(trial) -> list[RuleResult]:
    """Every rule on the smdebug ``trial``; a rule that cannot run reports why instead."""
    from smdebug.exceptions import RuleEvaluationConditionMet
    from smdebug.rules.rule_invoker import invoke_rule

    steps = trial.steps()
    end = (max(steps) + 1) if steps else 0
    results = []
    for rule_class in _rule_classes():
        name = rule_class.__name__
        fired_text, quiet_text = SUMMARIES[name]
        try:
            rule = rule_class(trial)
        except Exception as exc:
            results.append(RuleResult(name, False, None, {}, f"not evaluated: {exc}", error=str(exc)))
            continue
        try:
            invoke_rule(rule, start_step=0, end_step=end, raise_eval_cond=True)
            step, triggered = None, False
        except RuleEvaluationConditionMet as met:
            step, triggered = met.step, True
        evaluated = getattr(rule, "evaluated", 0)
        summary = fired_text if triggered else quiet_text
        if not triggered and evaluated == 0:
            summary = "not evaluated: the trial has no data this rule reads"
        results.append(
            RuleResult(
                name,
                triggered,
                step,
                _parameters(rule),
                summary,
                evaluated,
                details=getattr(rule, "details", {}) if triggered else {},
            )
        )
    return results


def write_rules(results: list[RuleResult], output_dir: Path) -> Path:
    path = write_json(
        output_dir,
        RULES_FILE,
        {"rules": [vars(r) for r in results], "triggered": [r.rule for r in results if r.triggered]},
    )
    for result in results:
        log.info(
            "rule %s: %s%s",
            result.rule,
            f"TRIGGERED at step {result.step}: " if result.triggered else "",
            result.summary,
        )
    return path
