"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO_ROOT / "local_data" / "sample"
TRAIN_SCRIPT = REPO_ROOT / "src" / "training-image" / "train_model.py"
HPO_SCRIPT = REPO_ROOT / "src" / "training-image" / "hpo.py"

# Small and fast on 2 CPU cores: random init, 32-pixel inputs.
FAST_ARGS = [
    "--pretrained",
    "false",
    "--freeze-backbone",
    "False",
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--workers",
    "1",
    "--log-interval",
    "5",
]


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
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def free_port() -> int:
    """A free 127.0.0.1 port below 32768: MMS parses port numbers as a Java short."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


class TrainingRun(NamedTuple):
    base: Path  # SAGEMAKER_BASE_DIR: model/, output/ and tmp/ (the run's TMPDIR)
    debug_dir: Path  # its smdebug trial
    stdout: str


@pytest.fixture(scope="session")
def training_runs(tmp_path_factory) -> dict[str, TrainingRun]:
    """A ResNet18 and a MobileNetV2 trained on the sample data by the real training code, once for every test
    that reads a finished run: its artifact, metrics, log, smdebug trial and temporary folder."""
    runs = {}
    for arch in SESSION_EPOCHS:
        base = tmp_path_factory.mktemp(f"train-{arch}")
        runs[arch] = session_run(arch, base)
    return runs


# Four epochs for ResNet18: at three, the validation accuracy of this config still swings (0.53, 0.83, 0.73 for
# one data order), and the served model's held-out accuracy with it.
SESSION_EPOCHS = {"resnet18": 4, "mobilenet_v2": 3}


def session_run(arch: str, base: Path, *extra: str) -> TrainingRun:
    """One of the session's training runs into ``base``; ``extra`` flags make a variant of it."""
    (base / "tmp").mkdir()
    result = run_script(
        TRAIN_SCRIPT,
        [
            "--data-dir",
            str(SAMPLE_DATA),
            *FAST_ARGS,
            "--model",
            arch,
            "--epochs",
            str(SESSION_EPOCHS[arch]),
            "--patience",
            "0",
            "--learning-rate",
            "0.003",
            "--debug-out-dir",
            str(base / "debug"),
            "--debug-save-interval",
            "2",
            "--debug-collections",
            "losses,weights,gradients",
            *extra,
        ],
        base,
        TMPDIR=str(base / "tmp"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return TrainingRun(base, base / "debug", result.stdout)


@pytest.fixture(scope="session")
def trained_models(training_runs) -> dict[str, Path]:
    """The artifact folders of :func:`training_runs`."""
    return {arch: run.base / "model" for arch, run in training_runs.items()}


@pytest.fixture(scope="session")
def model_store(tmp_path_factory, trained_models) -> Path:
    """The documented store (docs/serving.md): the two models under their TargetModel paths."""
    from dogbreed.package import pack_artifact

    store = tmp_path_factory.mktemp("store")
    pack_artifact(trained_models["resnet18"], store / "dog-breed-classifier" / "model.tar.gz")
    pack_artifact(trained_models["mobilenet_v2"], store / "dog-breed-classifier-mobile" / "model.tar.gz")
    return store
