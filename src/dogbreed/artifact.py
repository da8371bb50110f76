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

import json
import platform
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

import dogbreed
from dogbreed.errors import ArtifactError, ConfigError
from dogbreed.labels import display_label
from dogbreed.models import build_model

WEIGHTS_FILE = "model.pth"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1

REQUIRED_FIELDS = {
    "format_version": int,
    "architecture": str,
    "num_classes": int,
    "class_folders": list,
    "labels": list,
    "input_size": int,
    "mean": list,
    "std": list,
}


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
    (model_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def validate_metadata(metadata: Any, source: str = "metadata") -> None:
    """Check that ``metadata`` describes a model this code can rebuild."""
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{source}: expected a JSON object")
    for field, kind in REQUIRED_FIELDS.items():
        if field not in metadata:
            raise ArtifactError(f"{source}: missing field {field!r}")
        if not isinstance(metadata[field], kind) or isinstance(metadata[field], bool):
            raise ArtifactError(f"{source}: field {field!r} must be {kind.__name__}")
    if metadata["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            f"{source}: format_version {metadata['format_version']} is not supported (expected {FORMAT_VERSION})"
        )
    n = metadata["num_classes"]
    if len(metadata["class_folders"]) != n or len(metadata["labels"]) != n:
        raise ArtifactError(
            f"{source}: num_classes is {n} but there are {len(metadata['class_folders'])} class folders "
            f"and {len(metadata['labels'])} labels"
        )
    if not all(isinstance(x, str) for x in metadata["class_folders"] + metadata["labels"]):
        raise ArtifactError(f"{source}: class folders and labels must be strings")
    for field in ("mean", "std"):
        values = metadata[field]
        if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
            raise ArtifactError(f"{source}: {field} must be 3 numbers")
    if any(v <= 0 for v in metadata["std"]):
        raise ArtifactError(f"{source}: std must be positive")
    if not 16 <= metadata["input_size"] <= 2048:
        raise ArtifactError(f"{source}: input_size {metadata['input_size']} is out of range 16..2048")


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: not a model artifact written by train_model.py")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    validate_metadata(metadata, str(path))
    return metadata


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
