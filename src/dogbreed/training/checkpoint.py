"""Epoch checkpoints, so an interrupted job (managed spot) resumes where it stopped.

One file, ``checkpoint.pt``, is rewritten atomically after every epoch in the
checkpoint folder, which SageMaker syncs with the job's S3 checkpoint
location. It holds tensors and plain Python values only and is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dogbreed.errors import CheckpointError

CHECKPOINT_FILE = "checkpoint.pt"
# What must match for a checkpoint to continue the current job.
IDENTITY_KEYS = ("architecture", "class_folders", "image_size", "freeze_backbone")


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``directory``, or None when there is none.

    Raises :class:`CheckpointError` when one exists but belongs to another job.
    """
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({str(exc).splitlines()[0]}); delete it to start over"
        ) from exc
    for key in IDENTITY_KEYS:
        if state.get("identity", {}).get(key) != identity[key]:
            raise CheckpointError(
                f"checkpoint {path} belongs to another job: its {key} is "
                f"{state.get('identity', {}).get(key)!r}, this job's is {identity[key]!r}; "
                "delete it or use another --checkpoint-dir"
            )
    return state
