"""The model artifact: what training writes to SM_MODEL_DIR and serving loads.

An artifact is a folder (SageMaker packs it as ``model.tar.gz``) holding:

- ``model.pth``: the model's ``state_dict``, plain tensors only, so it loads
  with ``torch.load(weights_only=True)``;
- ``metadata.json``: everything needed to rebuild the model and its
  preprocessing (see :data:`REQUIRED_FIELDS`), plus metrics and versions.

Loading builds the architecture from this package's own code and fills in
the tensors; nothing stored in the artifact is ever executed.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

import dogbreed
from dogbreed.artifact import (
    FORMAT_VERSION,
    METADATA_FILE,
    WEIGHTS_FILE,
    read_metadata,
    validate_metadata,
    write_metadata,
)
from dogbreed.errors import ArtifactError, ConfigError
from dogbreed.labels import display_label
from dogbreed.training.models import build_model


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "dogbreed": dogbreed.__version__,
    }


def make_metadata(
    *,
    architecture: str,
    class_folders: list[str],
    input_size: int,
    mean: list[float],
    std: list[float],
    metrics: dict[str, Any],
    hyperparameters: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "num_classes": len(class_folders),
        "class_folders": list(class_folders),
        "labels": [display_label(c) for c in class_folders],
        "input_size": input_size,
        "mean": list(mean),
        "std": list(std),
        "weights_file": WEIGHTS_FILE,
        "metrics": metrics,
        "hyperparameters": hyperparameters,
        "versions": library_versions(),
    }


def save_artifact(model_dir: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    validate_metadata(metadata)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / (WEIGHTS_FILE + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    tmp.replace(model_dir / WEIGHTS_FILE)
    write_metadata(model_dir, metadata)


def load_artifact(model_dir: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model in ``model_dir`` in eval mode, with its metadata."""
    metadata = read_metadata(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing")
    try:
        # Built on the meta device: no time spent on a random init the stored weights replace.
        with torch.device("meta"):
            model = build_model(metadata["architecture"], metadata["num_classes"])
    except ConfigError as exc:
        raise ArtifactError(f"{model_dir / METADATA_FILE}: {exc}") from exc
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated zip, ...
        raise ArtifactError(f"cannot read {weights}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict):
        raise ArtifactError(f"{weights} does not hold a state dict")
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        raise ArtifactError(
            f"{weights} does not match the metadata ({metadata['architecture']}, "
            f"{metadata['num_classes']} classes): {str(exc).splitlines()[0]}"
        ) from exc
    return model.to(device).eval(), metadata
