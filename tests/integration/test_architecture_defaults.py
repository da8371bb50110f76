"""Every architecture learns the bundled sample with the make defaults (make train MODEL=...)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import FAST_ARGS, REPO_ROOT, SAMPLE_DATA, TRAIN_SCRIPT, run_script

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


def test_recomputing_batchnorm_leaves_training_itself_unchanged(tmp_path):
    """The statistics pass runs on forked random generators: the same seed gives the same training losses."""
    runs = {}
    for flag in ("true", "false"):
        base = tmp_path / flag
        result = run_script(
            TRAIN_SCRIPT,
            [
                "--data-dir",
                str(SAMPLE_DATA),
                *FAST_ARGS,
                "--model",
                "mobilenet_v2",
                "--epochs",
                "2",
                "--patience",
                "0",
                "--int8",
                "false",
                "--recompute-bn-stats",
                flag,
            ],
            base,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        runs[flag] = {
            "train": re.findall(r"train_loss=\S+", result.stdout),
            "log": result.stdout,
            "hyperparameters": json.loads((base / "model" / "metadata.json").read_text())["hyperparameters"],
        }
    assert len(runs["true"]["train"]) == 2 and runs["true"]["train"] == runs["false"]["train"]
    assert "BatchNorm statistics are recomputed" in runs["true"]["log"]
    assert "BatchNorm statistics are recomputed" not in runs["false"]["log"]
    assert runs["true"]["hyperparameters"]["recompute_bn_stats"] is True
