"""Kernel SHAP (Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017).

Shapley values of ``M`` binary features (here an image's superpixels, on or
replaced by the baseline) from a weighted least-squares fit of the model's
outputs on coalitions. The coalition sampling and the constrained fit follow
the ``shap`` library's ``KernelExplainer``:

- coalition sizes are weighted by the Shapley kernel ``(M-1) / (s (M-s))``;
- sizes whose every coalition the budget covers are enumerated (smallest and
  largest first, each size with its complement), the rest sampled in
  complementary pairs;
- the fit is constrained so the values add up to ``f(x) - f(baseline)``
  exactly (SHAP's efficiency property).

With a budget of ``2**M - 2`` coalitions every one is enumerated and the
result is the exact Shapley values. This module is used instead of ``shap``
itself because importing ``shap`` costs a serving worker about 200 MiB
(numba, pandas, scikit-learn), more than the models it would explain.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Coalitions:
    """Rows of ``masks`` (1 keeps a feature) with their kernel weights; the enumerated rows come first."""

    masks: np.ndarray  # (n, M) float64 of 0 and 1
    weights: np.ndarray  # (n,) float64

    def __len__(self) -> int:
        return len(self.weights)


def _size_weights(m: int) -> np.ndarray:
    """The kernel's total weight for each coalition size 1..ceil((M-1)/2), a size counting with its complement."""
    sizes = math.ceil((m - 1) / 2)
    paired = (m - 1) // 2
    weights = np.array([(m - 1) / (s * (m - s)) for s in range(1, sizes + 1)])
    weights[:paired] *= 2
    return weights / weights.sum()


def coalitions(m: int, budget: int, rng: np.random.Generator) -> Coalitions:
    """At most ``budget`` distinct coalitions of ``m`` features, never the empty or the full one."""
    if m < 2:
        return Coalitions(np.zeros((0, m)), np.zeros(0))
    budget = min(budget, 2**m - 2)
    size_weights = _size_weights(m)
    left = size_weights.copy()
    masks: list[np.ndarray] = []
    weights: list[float] = []
    remaining = budget
    enumerated = 0
    for index, size in enumerate(range(1, len(size_weights) + 1)):
        paired = size != m - size
        count = math.comb(m, size) * (2 if paired else 1)
        if left[index] * remaining / count < 1 - 1e-8:
            break
        enumerated += 1
        remaining -= count
        if left[index] < 1:
            left /= 1 - left[index]
        weight = size_weights[index] / math.comb(m, size) / (2 if paired else 1)
        for subset in itertools.combinations(range(m), size):
            mask = np.zeros(m)
            mask[list(subset)] = 1
            masks.append(mask)
            weights.append(weight)
            if paired:
                masks.append(1 - mask)
                weights.append(weight)
    sampled = _sample(m, remaining, size_weights[enumerated:], enumerated, rng)
    if sampled:
        total = sum(sampled.values())
        weight_left = size_weights[enumerated:].sum()
        for key, hits in sampled.items():
            masks.append(np.frombuffer(key, dtype=np.uint8).astype(np.float64))
            weights.append(weight_left * hits / total)
    return Coalitions(np.array(masks).reshape(-1, m), np.array(weights))


def _sample(m: int, budget: int, size_weights: np.ndarray, first: int, rng: np.random.Generator) -> dict[bytes, int]:
    """Distinct coalitions of the sizes not enumerated, drawn in complementary pairs, with how often each came."""
    found: dict[bytes, int] = {}
    if budget <= 0 or size_weights.size == 0:
        return found
    probabilities = size_weights / size_weights.sum()
    draws = 0
    # As shap does: stop after enough draws even when repeats keep the set from growing.
    while len(found) < budget and draws < 4 * budget + 100:
        draws += 1
        size = first + 1 + int(rng.choice(len(probabilities), p=probabilities))
        mask = np.zeros(m, dtype=np.uint8)
        mask[rng.permutation(m)[:size]] = 1
        for row in (mask, 1 - mask) if size != m - size else (mask,):
            key = row.tobytes()
            if key in found or len(found) < budget:
                found[key] = found.get(key, 0) + 1
    return found


def fit(coalitions: Coalitions, outputs: np.ndarray, full: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Shapley values, shape (M, outputs), from the model's ``outputs`` (n, k) on the coalitions' rows, its
    output on the whole input (``full``) and on the baseline (``empty``); they sum to ``full - empty``."""
    m = coalitions.masks.shape[1]
    difference = full - empty
    if m == 1:
        return difference[None, :].astype(np.float64)
    z = coalitions.masks
    if len(z) == 0:  # nothing to fit: share the difference out evenly
        return np.repeat(difference[None, :] / m, m, axis=0)
    # Eliminate the last feature through the constraint sum(phi) = difference.
    target = outputs - empty - z[:, -1:] * difference
    design = z[:, :-1] - z[:, -1:]
    root = np.sqrt(coalitions.weights)[:, None]
    head, *_ = np.linalg.lstsq(design * root, target * root, rcond=None)
    last = difference - head.sum(axis=0)
    return np.vstack([head, last[None, :]])
