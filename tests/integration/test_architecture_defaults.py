"""Every architecture learns the bundled sample with the make defaults (make train MODEL=...)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT, SESSION_EPOCHS, session_run

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "resnet50"])
def test_make_train_defaults_learn_the_sample(arch, tmp_path):
    out = tmp_path / "train"
    result = subprocess.run(
        ["make", "--no-print-directory", "train", f"MODEL={arch}", f"TRAIN_OUT={out}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "output" / "data" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9, f"{arch}: test accuracy {metrics['test_accuracy']}, chance is 0.25"
    hyperparameters = json.loads((out / "model" / "metadata.json").read_text())["hyperparameters"]
    assert hyperparameters["model"] == arch


def test_make_learning_rate_default_per_architecture():
    printed = {}
    for arch in ("mobilenet_v2", "resnet18", "resnet50"):
        result = subprocess.run(
            ["make", "--no-print-directory", "-n", "train", f"MODEL={arch}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        printed[arch] = result.stdout
    assert "--learning-rate 0.003" in printed["mobilenet_v2"]
    assert "--learning-rate 0.001" in printed["resnet18"] and "--learning-rate 0.001" in printed["resnet50"]


def test_recomputing_batchnorm_leaves_training_itself_unchanged(training_runs, tmp_path):
    """The statistics pass runs on forked random generators: the same seed gives the same training losses. The
    session's MobileNetV2 run recomputes them (its default); this one, with the same flags, does not."""
    runs = {
        "true": training_runs["mobilenet_v2"],
        "false": session_run("mobilenet_v2", tmp_path, "--recompute-bn-stats", "false"),
    }
    losses = {flag: re.findall(r"train_loss=\S+", run.stdout) for flag, run in runs.items()}
    assert len(losses["true"]) == SESSION_EPOCHS["mobilenet_v2"] and losses["true"] == losses["false"]
    assert "BatchNorm statistics are recomputed" in runs["true"].stdout
    assert "BatchNorm statistics are recomputed" not in runs["false"].stdout
    for flag, run in runs.items():
        hyperparameters = json.loads((run.base / "model" / "metadata.json").read_text())["hyperparameters"]
        assert hyperparameters["recompute_bn_stats"] is (flag == "true")
