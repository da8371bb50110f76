"""Metric lines in the training log, and the regexes SageMaker reads them with.

Every epoch logs one line, every value as ``name=value``::

    epoch=3 train_loss=0.9100 train_accuracy=0.6800 val_loss=0.8800 val_accuracy=0.7100

After training, one line describes the model that was kept (the epoch with
the best validation accuracy), then one line the test-set result::

    best_epoch=3 val_loss=0.8800 val_accuracy=0.7100
    test_loss=0.9000 test_accuracy=0.6900

So the last ``val_accuracy`` in a log is always the one of the saved model:
that is the value a tuning job sees as its objective.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

# Name + regex pairs as SageMaker Estimator(metric_definitions=...) and
# HyperparameterTuner take them.
METRIC_DEFINITIONS: list[dict[str, Any]] = [
    {"Name": "train:loss", "Regex": r"\btrain_loss=" + _NUMBER},
    {"Name": "train:accuracy", "Regex": r"\btrain_accuracy=" + _NUMBER},
    {"Name": "validation:loss", "Regex": r"\bval_loss=" + _NUMBER},
    {"Name": "validation:accuracy", "Regex": r"\bval_accuracy=" + _NUMBER},
    {"Name": "test:loss", "Regex": r"\btest_loss=" + _NUMBER},
    {"Name": "test:accuracy", "Regex": r"\btest_accuracy=" + _NUMBER},
]

# What tuning jobs optimise by default.
OBJECTIVE_METRIC = "validation:accuracy"


def format_metrics(**values: float | int) -> str:
    """``name=value`` pairs separated by spaces; floats with 4 decimals."""
    parts = []
    for name, value in values.items():
        parts.append(f"{name}={value:.4f}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


def parse_metrics(log_text: str) -> dict[str, list[float]]:
    """Apply :data:`METRIC_DEFINITIONS` to a log the way SageMaker does."""
    found: dict[str, list[float]] = {}
    for definition in METRIC_DEFINITIONS:
        pattern = re.compile(definition["Regex"])
        found[definition["Name"]] = [float(m.group(1)) for m in pattern.finditer(log_text)]
    return found
