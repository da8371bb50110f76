"""The artifact's files and metadata, without torch: what serving (torch-free) and training share.

See :mod:`dogbreed.training.artifact` for the format, and for saving and loading the torch weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dogbreed.errors import ArtifactError

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


EXPORT_COMMAND = "make export-onnx MODEL_DIR=<the artifact folder>"


def validate_metadata(metadata: Any, source: str = "metadata") -> None:
    """Check that ``metadata`` describes a model this code can rebuild."""
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{source}: expected a JSON object")
    for field, kind in REQUIRED_FIELDS.items():
        if field not in metadata:
            raise ArtifactError(f"{source}: missing field {field!r}")
        if not isinstance(metadata[field], kind) or isinstance(metadata[field], bool):
            raise ArtifactError(f"{source}: field {field!r} must be {kind.__name__}")
    _check_values(metadata, source)


def _check_values(metadata: dict[str, Any], source: str) -> None:
    """The fields' values, once each has its type."""
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


def write_metadata(model_dir: Path, metadata: dict[str, Any]) -> None:
    """Write ``metadata.json`` whole or not at all: a reader never sees half of it."""
    tmp = model_dir / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    tmp.replace(model_dir / METADATA_FILE)


def served_onnx_file(metadata: dict[str, Any]) -> tuple[str, str]:
    """(variant, file name) of the ONNX graph serving should use, as training chose it."""
    onnx = metadata.get("onnx")
    if not isinstance(onnx, dict) or not isinstance(onnx.get("variants"), dict):
        raise ArtifactError(
            f"the artifact has no model.onnx (it was written before training exported ONNX); "
            f"convert it with {EXPORT_COMMAND}"
        )
    variant = onnx.get("serve", "fp32")
    entry = onnx["variants"].get(variant)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"]:
        raise ArtifactError(f"metadata onnx.variants has no usable {variant!r} entry")
    return variant, entry["file"]
