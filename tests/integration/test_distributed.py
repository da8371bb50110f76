"""Data-parallel training under torchrun, two processes on CPU (gloo), through real processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import FAST_ARGS, REPO_ROOT, SAMPLE_DATA, TRAIN_SCRIPT, sagemaker_env_for
from tests.integration.test_training_failures_and_resume import max_weight_difference

pytestmark = pytest.mark.integration

# MobileNetV2: dropout and the BatchNorm recompute, as in the single-process resume test.
DDP_ARGS = [
    "--data-dir",
    str(SAMPLE_DATA),
    *FAST_ARGS,
    "--model",
    "mobilenet_v2",
    "--epochs",
    "3",
    "--learning-rate",
    "0.003",
    "--patience",
    "0",
    "--workers",
    "1",
    "--log-interval",
    "1",
    "--int8",
    "false",
]


def torchrun(args, base, processes: int = 2):
    """torchrun --standalone (a free rendezvous port on this host) with ``processes`` training processes."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            str(TRAIN_SCRIPT),
            *args,
        ],
        env={**sagemaker_env_for(base), "OMP_NUM_THREADS": "1"},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(process, timeout: float = 600) -> str:
    try:
        return process.communicate(timeout=timeout)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    process = torchrun(DDP_ARGS, base)
    output = finished(process)
    assert process.returncode == 0, output[-4000:]
    return base, output


def test_every_process_states_its_place_and_rank_0_alone_writes(two_processes):
    base, output = two_processes
    for rank in (0, 1):
        assert f"[rank {rank}] distributed: world_size=2 rank={rank} local_rank={rank} backend=gloo" in output
    assert output.count("model artifact written") == 1 and "[rank 0] model artifact written" in output
    assert len(re.findall(r"\btest_accuracy=", output)) == 1  # the tuning regexes see one set of metric lines
    assert len(re.findall(r"\bepoch=3 ", output)) == 1
    assert output.count("training insights written") == 1
    assert not re.search(r"\[rank 1\] epoch \d/3 train step", output)  # progress from rank 0 only
    from smdebug.trials import create_trial

    trial = create_trial(str(base / "output" / "data" / "tensors"))
    assert trial.workers() == ["worker_0"]  # rank 0's trial; see docs/training.md for why
    # Each rank trained on half the images: 80 per epoch, 5 steps of 16.
    assert len(trial.tensor(trial.tensor_names(collection="losses")[0]).steps()) > 15
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]


def test_the_test_accuracy_is_what_one_process_measures_on_the_same_weights(two_processes):
    from dogbreed.training.artifact import load_artifact
    from dogbreed.training.data import ImageFileDataset, discover, resolve_split_dirs
    from dogbreed.training.transforms import eval_transform, resize_size

    base, _ = two_processes
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    model, metadata = load_artifact(base / "model")
    size = metadata["input_size"]
    data = discover(resolve_split_dirs(SAMPLE_DATA, {"train": None, "valid": None, "test": None}))
    loader = DataLoader(
        ImageFileDataset(data.splits["test"].samples, eval_transform(size), resize_size(size)), batch_size=16
    )
    correct = total = 0
    with torch.no_grad():
        for images, targets in loader:
            correct += int((model(images).argmax(1) == targets).sum())
            total += len(targets)
    assert total == 40 and correct / total == metrics["test_accuracy"]


def test_sigterm_stops_every_rank_at_one_step_and_a_resumed_job_ends_with_the_same_weights(tmp_path):
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    process = torchrun(DDP_ARGS, stopped)
    seen = []
    for line in process.stdout:  # rank 0's progress line per step: stop in the middle of epoch 2
        seen.append(line)
        if "epoch 2/3 train step 3/" in line:
            process.send_signal(signal.SIGTERM)  # to torchrun, as the image's `train` relays it
            break
    output = "".join(seen) + finished(process, timeout=120)
    assert process.returncode != 0, output[-3000:]
    steps = set(re.findall(r"stopped by SIGTERM in epoch 2 after step (\d+)", output))
    assert len(steps) == 1, output[-3000:]  # both ranks stopped at the same step
    failure = (stopped / "output" / "failure").read_text()
    assert failure.startswith(f"stopped by SIGTERM in epoch 2 after step {steps.pop()}")
    checkpoint = torch.load(stopped / "checkpoints" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["partial"]["epoch"] == 2 and checkpoint["partial"]["batches"] >= 3

    resumed = torchrun(DDP_ARGS, stopped)
    resumed_output = finished(resumed)
    assert resumed.returncode == 0, resumed_output[-3000:]
    for rank in (0, 1):  # every rank resumes from rank 0's checkpoint
        assert re.search(
            rf"\[rank {rank}\] resuming from checkpoint .* in epoch 2 after step "
            rf"{checkpoint['partial']['batches']}\n",
            resumed_output,
        )
    assert not (stopped / "output" / "failure").exists()

    uninterrupted = torchrun(DDP_ARGS, straight)
    straight_output = finished(uninterrupted)
    assert uninterrupted.returncode == 0, straight_output[-3000:]
    a = torch.load(stopped / "model" / "model.pth", map_location="cpu", weights_only=True)
    b = torch.load(straight / "model" / "model.pth", map_location="cpu", weights_only=True)
    assert max_weight_difference(a, b) <= 1e-6
    histories = [
        json.loads((base / "output" / "data" / "metrics.json").read_text())["history"] for base in (stopped, straight)
    ]
    assert [h["train_loss"] for h in histories[0]] == pytest.approx([h["train_loss"] for h in histories[1]], abs=1e-6)


def test_a_killed_rank_ends_the_job_promptly_with_a_failure_file(tmp_path):
    process = torchrun([*DDP_ARGS, "--epochs", "20"], tmp_path)
    for line in process.stdout:
        if "epoch 1/20 train step 2/" in line:
            break
    # torchrun's own children are the training processes (their DataLoader workers are theirs).
    workers = [p for p in psutil.Process(process.pid).children() if p.environ().get("RANK") == "1"]
    assert len(workers) == 1
    killed_at = time.monotonic()
    workers[0].kill()
    output = finished(process, timeout=120)
    assert process.returncode != 0
    assert time.monotonic() - killed_at < 60, "the job hung after losing a rank"
    # Rank 0 names itself; its error is the connection rank 1 took with it.
    assert (tmp_path / "output" / "failure").read_text().startswith("rank 0 of 2: unexpected error: "), output[-3000:]
    assert not (tmp_path / "model" / "model.pth").exists()
