"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO_ROOT / "local_data" / "sample"
TRAIN_SCRIPT = REPO_ROOT / "src" / "train" / "train_model.py"
HPO_SCRIPT = REPO_ROOT / "src" / "train" / "hpo.py"

# Small and fast on 2 CPU cores: random init, 32-pixel inputs.
FAST_ARGS = ["--pretrained", "false", "--freeze-backbone", "False", "--image-size", "32",
             "--batch-size", "16", "--workers", "1", "--log-interval", "5"]


@pytest.fixture
def clean_env(monkeypatch):
    """No SageMaker variables leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("SM_", "SAGEMAKER_", "SMDEBUG_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A private copy of the sample dataset that a test may damage."""
    dest = tmp_path / "data"
    shutil.copytree(SAMPLE_DATA, dest)
    return dest


def sagemaker_env_for(base: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "SMDEBUG_"))}
    env.update({"SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run_script(script: Path, args: list[str], base: Path, timeout: float = 600, **extra_env: str):
    """Run a training entry point as SageMaker would, with /opt/ml moved to ``base``."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=sagemaker_env_for(base, **extra_env),
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
    )
