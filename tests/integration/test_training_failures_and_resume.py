"""Interrupt-and-resume, failure reporting and the Debugger config path, through real processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import FAST_ARGS, REPO_ROOT, SAMPLE_DATA, TRAIN_SCRIPT, run_script, sagemaker_env_for

pytestmark = pytest.mark.integration


# MobileNetV2 has dropout (the global random generator) and recomputed BatchNorm statistics; two workers
# prepare batches in parallel. None of it may make a resumed run differ from an uninterrupted one.
RESUME_ARGS = [
    "--data-dir",
    str(SAMPLE_DATA),
    *FAST_ARGS,
    "--model",
    "mobilenet_v2",
    "--epochs",
    "3",
    "--patience",
    "0",
    "--workers",
    "2",
    "--log-interval",
    "1",
    "--int8",
    "false",
]


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def max_weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0 for k in a)


def test_sigterm_mid_epoch_then_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    process = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *RESUME_ARGS],
        env=sagemaker_env_for(stopped),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        for line in process.stdout:  # a progress line per step: stop in the middle of epoch 2
            seen.append(line)
            if "epoch 2/3 train step 4/" in line:
                process.send_signal(signal.SIGTERM)  # what SageMaker sends before reclaiming a spot instance
                break
        output = "".join(seen) + process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, output[-3000:]
    failure = (stopped / "output" / "failure").read_text()
    assert failure.startswith("stopped by SIGTERM in epoch 2 after step ") and "checkpoint" in failure
    checkpoint = _state(stopped / "checkpoints" / "checkpoint.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["partial"]["epoch"] == 2 and checkpoint["partial"]["batches"] >= 4
    assert not (stopped / "model" / "metadata.json").exists()

    resumed = run_script(TRAIN_SCRIPT, RESUME_ARGS, stopped)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert f"in epoch 2 after step {checkpoint['partial']['batches']}" in resumed.stdout
    assert not (stopped / "output" / "failure").exists(), "the resumed, successful job still reads as failed"
    assert not re.search(r"(?<!\w)epoch=1 ", resumed.stdout)  # epoch 1 was not trained again

    uninterrupted = run_script(TRAIN_SCRIPT, RESUME_ARGS, straight)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    for relative in ("model/model.pth", "checkpoints/checkpoint.pt"):
        a, b = _state(stopped / relative), _state(straight / relative)
        a, b = (a, b) if relative.endswith(".pth") else (a["model"], b["model"])
        assert max_weight_difference(a, b) <= 1e-6, relative
    histories = [
        json.loads((base / "output" / "data" / "metrics.json").read_text())["history"] for base in (stopped, straight)
    ]
    assert [h["train_loss"] for h in histories[0]] == pytest.approx([h["train_loss"] for h in histories[1]], abs=1e-6)


def test_checkpoint_of_another_job_is_refused(tmp_path):
    first = run_script(TRAIN_SCRIPT, ["--data-dir", str(SAMPLE_DATA), *FAST_ARGS, "--epochs", "1"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    other = run_script(
        TRAIN_SCRIPT, ["--data-dir", str(SAMPLE_DATA), *FAST_ARGS, "--epochs", "1", "--model", "mobilenet_v2"], tmp_path
    )
    assert other.returncode == 1
    assert "belongs to another job: its architecture is 'resnet18'" in other.stderr


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: __import__("shutil").rmtree(d / "test"), "split 'test' not found"),
        (
            lambda d: (d / "train" / "002.Emerald_square" / "Emerald_square_00003.jpg").write_bytes(
                b"\xff\xd8\xff\xe0trunc"
            ),
            "bad image ",
        ),
    ],
)
def test_bad_data_fails_early_with_failure_file(sample_copy, tmp_path, damage, message):
    damage(sample_copy)
    base = tmp_path / "ml"
    result = run_script(TRAIN_SCRIPT, ["--data-dir", str(sample_copy), *FAST_ARGS, "--bad-images", "fail"], base)
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in result.stderr
    assert message in (base / "output" / "failure").read_text()
    assert not (base / "model").exists()


def test_bad_hyperparameter_fails_at_once(tmp_path):
    result = run_script(TRAIN_SCRIPT, ["--data-dir", str(SAMPLE_DATA), "--batch-size", "0"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "train_model.py: error: argument --batch-size: must be at least 1, got 0"
    assert "batch-size" in (tmp_path / "output" / "failure").read_text()


def test_hook_comes_from_sagemaker_debugger_config(tmp_path):
    from smdebug import modes
    from smdebug.trials import create_trial

    tensors = tmp_path / "tensors"
    config = tmp_path / "ml" / "input" / "config" / "debughookconfig.json"
    config.parent.mkdir(parents=True)
    config.write_text(
        json.dumps(
            {
                "LocalPath": str(tensors),
                "HookParameters": {"save_interval": "1"},
                "CollectionConfigurations": [{"CollectionName": "losses"}, {"CollectionName": "gradients"}],
            }
        )
    )
    # --debug-out-dir is ignored: the job's Debugger config wins.
    result = run_script(
        TRAIN_SCRIPT,
        ["--data-dir", str(SAMPLE_DATA), *FAST_ARGS, "--epochs", "1", "--debug-out-dir", str(tmp_path / "ignored")],
        tmp_path / "ml",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"hook from Debugger config {config}" in result.stdout
    assert not (tmp_path / "ignored").exists()
    trial = create_trial(str(tensors))
    loss = trial.tensor(trial.tensor_names(collection="losses")[0])
    assert len(loss.steps(mode=modes.TRAIN)) == 10
    assert trial.tensor_names(collection="gradients")
