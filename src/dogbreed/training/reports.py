"""Evaluation reports written to SM_OUTPUT_DATA_DIR: metrics.json and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.json"
CURVES_PLOT = "learning_curves.png"
CONFUSION_PLOT = "confusion_matrix.png"

# Above this many classes the confusion matrix is drawn without numbers in
# the cells; 133 breeds would make them unreadable.
_ANNOTATE_MAX_CLASSES = 20


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes."""
    flat = targets.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_report(matrix: torch.Tensor, class_folders: list[str], labels: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, (folder, label) in enumerate(zip(class_folders, labels, strict=True)):
        support = int(matrix[i].sum())
        correct = int(matrix[i, i])
        rows.append(
            {
                "class_index": i,
                "class_folder": folder,
                "label": label,
                "support": support,
                "correct": correct,
                "accuracy": correct / support if support else None,
            }
        )
    return rows


def write_json(output_dir: Path, name: str, payload: Any, indent: int | None = 2) -> Path:
    """``payload`` as ``output_dir/name``: the one way the training outputs (metrics, rules, profile) are written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / name
    path.write_text(json.dumps(payload, indent=indent) + "\n", encoding="utf-8")
    return path


def write_metrics(output_dir: Path, report: dict[str, Any]) -> Path:
    return write_json(output_dir, METRICS_FILE, report)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display in a training job
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(output_dir: Path, history: list[dict[str, float]]) -> Path:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("train", "o-"), ("val", "s--")):
        ax_loss.plot(epochs, [h[f"{key}_loss"] for h in history], style, label=key)
        ax_acc.plot(epochs, [h[f"{key}_accuracy"] for h in history], style, label=key)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    path = output_dir / CURVES_PLOT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(output_dir: Path, matrix: torch.Tensor, labels: list[str]) -> Path:
    plt = pyplot()
    n = len(labels)
    size = min(4 + 0.25 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = matrix.sum(dim=1, keepdim=True).clamp(min=1)
    normalised = (matrix / rows).numpy()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="Test-set confusion matrix")
    fontsize = 8 if n <= _ANNOTATE_MAX_CLASSES else 4
    ax.set_xticklabels(labels, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(labels, fontsize=fontsize)
    if n <= _ANNOTATE_MAX_CLASSES:
        for i in range(n):
            for j in range(n):
                value = int(matrix[i, j])
                if value:
                    ax.text(
                        j,
                        i,
                        value,
                        ha="center",
                        va="center",
                        color="white" if normalised[i, j] > 0.5 else "black",
                        fontsize=8,
                    )
    fig.tight_layout()
    path = output_dir / CONFUSION_PLOT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
