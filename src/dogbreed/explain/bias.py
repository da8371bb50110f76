"""Bias and errors, as SageMaker Clarify reports them for a classifier: the training data's class balance, and the
predictions' per-class recall and precision with the most confused pairs.

- **Class Imbalance (CI)**, Clarify's pre-training metric, of each class ``a``
  against the rest ``d``: ``(n_d - n_a) / (n_d + n_a)``. With K classes a
  balanced set gives every class ``1 - 2/K``; a class is flagged when it holds
  under ``ratio`` (0.5) or over ``1 / ratio`` times the mean count, that is
  when its CI is past ``1 - 2 ratio / K`` or ``1 - 2 / (ratio K)``.
- **Predictions** come from a batch-transform output folder (one
  ``CLASS_FOLDER/IMAGE.out`` JSON answer per image, the serving image's
  format, the true class from the folder) or from a run over a folder of
  labelled images.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.errors import DataError
from dogbreed.labels import display_label

DEFAULT_RATIO = 0.5


@dataclass(frozen=True)
class ClassBalance:
    label: str
    count: int
    class_imbalance: float
    flag: str | None  # "under-represented", "over-represented" or None


def class_balance(labels: list[str], counts: list[int], ratio: float = DEFAULT_RATIO) -> list[ClassBalance]:
    """Each class's count and CI against the rest, flagged past the thresholds above."""
    if len(labels) != len(counts):
        raise DataError(f"{len(labels)} labels but {len(counts)} class counts")
    total = sum(counts)
    if total == 0:
        raise DataError("the class counts are all zero")
    mean = total / len(counts)
    rows = []
    for label, count in zip(labels, counts, strict=True):
        flag = None
        if count < ratio * mean:
            flag = "under-represented"
        elif count > mean / ratio:
            flag = "over-represented"
        rows.append(ClassBalance(label, count, ((total - count) - count) / total, flag))
    return rows


def balance_from_metrics(metrics: dict[str, Any], split: str = "train") -> list[ClassBalance]:
    """:func:`class_balance` of a training job's ``metrics.json`` (its ``labels`` and ``class_counts``)."""
    try:
        return class_balance(metrics["labels"], metrics["class_counts"][split])
    except (KeyError, TypeError):
        raise DataError(f"metrics.json has no labels and class_counts for {split!r}") from None


@dataclass
class Confusion:
    """Rows are true classes, columns predicted classes, over ``labels``."""

    labels: list[str]
    matrix: np.ndarray

    @classmethod
    def of_pairs(cls, pairs: Iterable[tuple[str, str]], labels: list[str] | None = None) -> Confusion:
        pairs = list(pairs)
        if not pairs:
            raise DataError("no labelled predictions to score")
        names = list(labels) if labels else sorted({name for pair in pairs for name in pair})
        index = {name: i for i, name in enumerate(names)}
        for pair in pairs:
            for name in pair:
                if name not in index:
                    index[name] = len(names)
                    names.append(name)
        matrix = np.zeros((len(names), len(names)), dtype=np.int64)
        for true, predicted in pairs:
            matrix[index[true], index[predicted]] += 1
        return cls(names, matrix)

    def per_class(self) -> list[dict[str, Any]]:
        rows = []
        for i, label in enumerate(self.labels):
            correct = int(self.matrix[i, i])
            support, predicted = int(self.matrix[i].sum()), int(self.matrix[:, i].sum())
            rows.append(
                {
                    "label": label,
                    "support": support,
                    "recall": correct / support if support else None,
                    "precision": correct / predicted if predicted else None,
                }
            )
        return rows

    def most_confused(self, count: int = 10) -> list[dict[str, Any]]:
        """The largest off-diagonal cells: true class, predicted class, how many."""
        off = self.matrix.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:count]
        pairs = []
        for flat in order:
            true, predicted = divmod(int(flat), len(self.labels))
            if off[true, predicted] == 0:
                break
            count = int(off[true, predicted])
            pairs.append({"true": self.labels[true], "predicted": self.labels[predicted], "count": count})
        return pairs

    def accuracy(self) -> float:
        return float(np.trace(self.matrix) / self.matrix.sum())


def transform_pairs(output_dir: Path) -> list[tuple[str, str]]:
    """(true, predicted) labels from a batch-transform output folder: ``CLASS_FOLDER/IMAGE.out`` answers."""
    if not output_dir.is_dir():
        raise DataError(f"{output_dir} is not a folder of batch-transform output")
    pairs = []
    for path in sorted(output_dir.rglob("*.out")):
        try:
            answer = json.loads(path.read_text(encoding="utf-8"))
            predicted = answer["results"][0]["predictions"][0]["label"]
        except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError):
            raise DataError(f"{path.name} is not an answer of the serving image") from None
        pairs.append((display_label(path.parent.name), predicted))
    if not pairs:
        raise DataError(f"no .out files under {output_dir}: point at a batch transform's output folder")
    return pairs
