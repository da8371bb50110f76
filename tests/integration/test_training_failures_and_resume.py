"""Interrupt-and-resume, failure reporting and the Debugger config path, through real processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import FAST_ARGS, REPO_ROOT, SAMPLE_DATA, TRAIN_SCRIPT, run_script, sagemaker_env_for

pytestmark = pytest.mark.integration


def test_sigterm_then_resume_reaches_the_same_final_epoch(tmp_path):
    args = [sys.executable, str(TRAIN_SCRIPT), "--data-dir", str(SAMPLE_DATA), *FAST_ARGS,
            "--epochs", "4", "--patience", "0", "--workers", "0"]
    checkpoint = tmp_path / "checkpoints" / "checkpoint.pt"
    process = subprocess.Popen(args, env=sagemaker_env_for(tmp_path), cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), "no checkpoint was written"
        process.send_signal(signal.SIGTERM)  # what SageMaker sends before reclaiming a spot instance
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, output[-2000:]
    assert "the checkpoint in" in output
    assert not (tmp_path / "model" / "metadata.json").exists()
    assert not (tmp_path / "output" / "failure").exists()

    resumed = run_script(TRAIN_SCRIPT, args[2:], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint" in resumed.stdout
    first_epoch_run_again = int(resumed.stdout.split("after epoch ")[1].split()[0]) + 1
    metrics = json.loads((tmp_path / "output" / "data" / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 4
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    # A metric line per epoch run again; best_epoch=1 may appear in the summary line, hence the look-behind.
    assert re.search(rf"(?<!\w)epoch={first_epoch_run_again} ", resumed.stdout)
    assert not re.search(r"(?<!\w)epoch=1 ", resumed.stdout)
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["hyperparameters"]["epochs"] == 4


def test_checkpoint_of_another_job_is_refused(tmp_path):
    first = run_script(TRAIN_SCRIPT, ["--data-dir", str(SAMPLE_DATA), *FAST_ARGS, "--epochs", "1"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    other = run_script(TRAIN_SCRIPT, ["--data-dir", str(SAMPLE_DATA), *FAST_ARGS, "--epochs", "1",
                                      "--model", "mobilenet_v2"], tmp_path)
    assert other.returncode == 1
    assert "belongs to another job: its architecture is 'resnet18'" in other.stderr


@pytest.mark.parametrize("damage, message", [
    (lambda d: __import__("shutil").rmtree(d / "test"), "split 'test' not found"),
    (lambda d: (d / "train" / "002.Emerald_square" / "Emerald_square_00003.jpg").write_bytes(b"\xff\xd8\xff\xe0trunc"),
     "bad image "),
])
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
    config.write_text(json.dumps({
        "LocalPath": str(tensors),
        "HookParameters": {"save_interval": "1"},
        "CollectionConfigurations": [{"CollectionName": "losses"}, {"CollectionName": "gradients"}],
    }))
    # --debug-out-dir is ignored: the job's Debugger config wins.
    result = run_script(TRAIN_SCRIPT, ["--data-dir", str(SAMPLE_DATA), *FAST_ARGS, "--epochs", "1",
                                       "--debug-out-dir", str(tmp_path / "ignored")], tmp_path / "ml")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"hook from Debugger config {config}" in result.stdout
    assert not (tmp_path / "ignored").exists()
    trial = create_trial(str(tensors))
    loss = trial.tensor(trial.tensor_names(collection="losses")[0])
    assert len(loss.steps(mode=modes.TRAIN)) == 10
    assert trial.tensor_names(collection="gradients")
