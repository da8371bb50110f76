"""The training image: SageMaker local mode through the SDK, the raw training contract, hpo.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile

import pytest
import torch

from dogbreed.training.artifact import load_artifact
from dogbreed.training.metrics import parse_metrics
from tests.conftest import SAMPLE_DATA, free_port
from tests.container.conftest import TAG, inspect, make
from tests.serving import Server

HPARAMS = (
    "-H epochs=2 -H batch-size=16 -H image-size=32 -H pretrained=false -H freeze-backbone=false "
    "-H workers=1 -H debug-out-dir=/opt/ml/output/data/tensors -H debug-collections=losses,weights "
    "-H debug-save-interval=2"
)


def docker_networks() -> set[str]:
    listed = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True)
    return set(listed.stdout.split())


@pytest.fixture(scope="module")
def local_train(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    networks_before = docker_networks()
    result = make("local-train", f"TAG={TAG}", f"LOCAL_OUT={out}", f"LOCAL_HPARAMS={HPARAMS}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    leftovers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"ancestor={images['train']}"], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], "local mode left containers behind"
    assert docker_networks() == networks_before, "local mode left its compose network behind"
    model_archive = next(out.rglob("model.tar.gz"))
    output_archive = next(out.rglob("output.tar.gz"))
    return out, model_archive, output_archive, result.stdout


def test_local_train_yields_the_documented_artifact(local_train, tmp_path):
    _, model_archive, _, _ = local_train
    with tarfile.open(model_archive) as tar:
        assert sorted(tar.getnames()) == ["metadata.json", "model.int8.onnx", "model.onnx", "model.pth"]
        tar.extractall(tmp_path, filter="data")
    _model, metadata = load_artifact(tmp_path)
    assert metadata["architecture"] == "resnet18" and metadata["input_size"] == 32
    assert metadata["hyperparameters"]["epochs"] == 2


def test_reports_and_smdebug_tensors_come_back_from_the_container(local_train, tmp_path):
    from smdebug import modes
    from smdebug.trials import create_trial

    _, _, output_archive, stdout = local_train
    with tarfile.open(output_archive) as tar:
        tar.extractall(tmp_path, filter="data")
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["epochs_completed"] == 2 and len(metrics["test"]["per_class"]) == 4
    assert next(tmp_path.rglob("confusion_matrix.png")).read_bytes()[:4] == b"\x89PNG"
    tensors = next(p for p in tmp_path.rglob("tensors") if p.is_dir())
    trial = create_trial(str(tensors))
    loss = trial.tensor(trial.tensor_names(collection="losses")[0])
    assert len(loss.steps(mode=modes.TRAIN)) == 20  # 2 epochs x 10 batches: losses every step
    weights = trial.tensor_names(collection="weights")
    assert weights and len(trial.tensor(weights[0]).steps(mode=modes.TRAIN)) == 10  # every 2nd step
    # The rules ran and the report was written in the container, and came back with the outputs.
    rules = json.loads(next(tmp_path.rglob("rules.json")).read_text())
    assert {r["rule"] for r in rules["rules"]} >= {"LossNotDecreasing", "ExplodingTensor", "VanishingGradient"}
    assert "<h2>Rules</h2>" in next(tmp_path.rglob("debugger-report.html")).read_text()
    assert json.loads(next(tmp_path.rglob("profile.json")).read_text())["summary"]["steps"] == 20
    assert parse_metrics(stdout)["test:accuracy"]


def test_local_train_on_two_containers_trains_data_parallel_and_cleans_up(images, tmp_path):
    """make local-train INSTANCE_COUNT=2 with the make defaults: algo-1 and algo-2 under torchrun."""
    networks_before = docker_networks()
    result = make("local-train", f"TAG={TAG}", f"LOCAL_OUT={tmp_path}", "INSTANCE_COUNT=2")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    for rank in (0, 1):
        assert f"distributed: world_size=2 rank={rank} local_rank=0 backend=gloo" in log
    assert "torchrun --nnodes 2 --nproc_per_node 1 --master_addr algo-1" in log  # the toolkit's launcher
    assert (
        subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"ancestor={images['train']}"], capture_output=True, text=True
        ).stdout.split()
        == []
    ), "containers left behind"
    assert docker_networks() == networks_before, "the compose network was left behind"
    with tarfile.open(next(tmp_path.rglob("output.tar.gz"))) as tar:
        tar.extractall(tmp_path / "output", filter="data")
    metrics = json.loads(next((tmp_path / "output").rglob("metrics.json")).read_text())
    assert metrics["test_accuracy"] >= 0.9
    with tarfile.open(next(tmp_path.rglob("model.tar.gz"))) as tar:
        tar.extractall(tmp_path / "model", filter="data")
    _, metadata = load_artifact(tmp_path / "model")
    assert metadata["metrics"]["test_accuracy"] == metrics["test_accuracy"]


def test_a_failed_local_job_ends_in_one_line_with_its_reason_and_leaves_nothing_behind(images, tmp_path):
    """SDK v3 returns normally when a container fails; the command reads the job's failure file instead."""
    networks_before = docker_networks()
    result = make(
        "local-train",
        f"TAG={TAG}",
        f"LOCAL_OUT={tmp_path}",
        "LOCAL_HPARAMS=-H epochs=1 -H pretrained=false -H image-size=32 -H model=vgg11",
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("dogbreed local:")]
    assert len(errors) == 1 and errors[0].startswith("dogbreed local: error: local training job failed: ")
    assert "vgg11" in errors[0]  # the training script's own reason, from /opt/ml/output/failure
    leftovers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"ancestor={images['train']}"], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [] and docker_networks() == networks_before
    assert not list(tmp_path.rglob("model.tar.gz")) and not (tmp_path / "resnet18" / ".container-root").exists()


def test_make_local_hpo_runs_hpo_py_trials_in_the_same_image_and_reports_the_best(images, tmp_path):
    result = make(
        "local-hpo",
        f"TAG={TAG}",
        f"LOCAL_OUT={tmp_path}",
        "LOCAL_HPARAMS=-H epochs=1 -H batch-size=16 -H image-size=32 -H pretrained=false "
        "-H freeze-backbone=false -H workers=0",
        "HPO_GRID=--grid learning-rate=0.001,0.05",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    # hpo.py in the container logs the lines the tuning job's metric regexes read.
    container_log = "\n".join(
        line for line in result.stdout.splitlines() if not line.startswith(("trial ", "best: "))
    )  # the summary lines local.py adds
    found = parse_metrics(container_log)
    # Per trial: one epoch line and the kept model's line, each with val_accuracy; one test line.
    assert len(found["validation:accuracy"]) == 4 and len(found["test:accuracy"]) == 2
    summary = json.loads((tmp_path / "hpo" / "trials.json").read_text())
    trials = summary["trials"]
    assert [t["hyperparameters"] for t in trials] == [{"learning-rate": "0.001"}, {"learning-rate": "0.05"}]
    # Each trial's objective is the one its container logged, and the best is the highest.
    objectives = found["validation:accuracy"][1::2]  # the last val_accuracy of each trial's log
    assert [t["val_accuracy"] for t in trials] == pytest.approx(objectives, abs=1e-4)
    assert summary["best"] == max(trials, key=lambda t: t["val_accuracy"])
    assert f"best: {summary['best']['hyperparameters']}" in result.stdout
    for trial in trials:
        with tarfile.open(trial["model"]) as tar:
            assert sorted(tar.getnames()) == ["metadata.json", "model.int8.onnx", "model.onnx", "model.pth"]


def _sagemaker_tree(root, data_source, hyperparameters):
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (config / "inputdataconfig.json").write_text(json.dumps({"training": {"TrainingInputMode": "File"}}))
    channel = root / "input" / "data" / "training"
    shutil.copytree(data_source, channel)
    for name in ("model", "output", "checkpoints"):
        (root / name).mkdir(exist_ok=True)
    return channel


def test_broken_dataset_writes_the_failure_file_and_exits_non_zero(images, tmp_path, container_name):
    channel = _sagemaker_tree(tmp_path / "ml", SAMPLE_DATA, {"pretrained": "false", "epochs": "1", "image-size": "32"})
    shutil.rmtree(channel / "valid")
    # As SageMaker does: each /opt/ml folder mounted on its own (the image's /opt/ml/code stays visible),
    # and the container named after resourceconfig.json's host, which the toolkit resolves.
    mounts = [
        arg
        for name in ("input", "model", "output", "checkpoints")
        for arg in ("-v", f"{tmp_path / 'ml' / name}:/opt/ml/{name}")
    ]
    result = subprocess.run(
        ["docker", "run", "--name", container_name, "--hostname", "algo-1", *mounts, images["train"], "train"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    failure = (tmp_path / "ml" / "output" / "failure").read_text()
    assert "split 'valid' not found" in failure
    assert "train_model.py: error: split 'valid' not found" in result.stdout + result.stderr


def test_a_restarted_spot_job_resumes_from_the_checkpoints_sagemaker_restores(images, tmp_path, container_name):
    """Managed spot: SageMaker syncs /opt/ml/checkpoints to S3 and puts it back in the next container."""
    hyperparameters = {
        "pretrained": "false",
        "freeze-backbone": "false",
        "image-size": "32",
        "batch-size": "16",
        "epochs": "1",
        "patience": "0",
    }
    _sagemaker_tree(tmp_path / "ml", SAMPLE_DATA, hyperparameters)
    mounts = [
        arg
        for name in ("input", "model", "output", "checkpoints")
        for arg in ("-v", f"{tmp_path / 'ml' / name}:/opt/ml/{name}")
    ]

    def run_job() -> subprocess.CompletedProcess:
        result = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--name",
                container_name,
                "--hostname",
                "algo-1",
                *mounts,
                images["train"],
                "train",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        return result

    first = run_job()
    assert "resuming" not in first.stdout + first.stderr
    assert list((tmp_path / "ml" / "checkpoints").iterdir()), "no checkpoint written to /opt/ml/checkpoints"
    # The next container finds the restored checkpoint and carries on with the epochs left.
    hyperparameters["epochs"] = "2"
    (tmp_path / "ml" / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    second = run_job()
    log = second.stdout + second.stderr
    assert "resuming from checkpoint /opt/ml/checkpoints after epoch 1" in log
    epoch_lines = [line for line in log.splitlines() if "train_loss=" in line]
    assert len(epoch_lines) == 1 and "epoch=2 " in epoch_lines[0]  # epoch 1 was not trained again
    metrics = json.loads(next((tmp_path / "ml" / "output").rglob("metrics.json")).read_text())
    assert metrics["epochs_completed"] == 2


def _mounts(root) -> list[str]:
    """Each /opt/ml folder mounted on its own, as SageMaker does (the image's /opt/ml/code stays visible)."""
    return [
        arg for name in ("input", "model", "output", "checkpoints") for arg in ("-v", f"{root / name}:/opt/ml/{name}")
    ]


def test_docker_stop_checkpoints_the_step_and_the_restarted_job_ends_as_an_uninterrupted_one(
    images, tmp_path, container_name
):
    """docker stop reaches train_model.py through tini and the toolkit; the resumed job matches a straight run."""
    hyperparameters = {
        "pretrained": "false",
        "freeze-backbone": "false",
        "image-size": "32",
        "batch-size": "16",
        "epochs": "2",
        "patience": "0",
        "log-interval": "1",
        "int8": "false",
        "model": "mobilenet_v2",
        "workers": "2",
    }
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    for root in (stopped, straight):
        _sagemaker_tree(root, SAMPLE_DATA, hyperparameters)
    run = ["docker", "run", "--hostname", "algo-1"]
    subprocess.run(
        [*run, "-d", "--name", container_name, *_mounts(stopped), images["train"], "train"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    logs = subprocess.Popen(
        ["docker", "logs", "-f", container_name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for line in logs.stdout:
            if "epoch 2/2 train step 3/" in line:
                break
        stop = subprocess.run(["docker", "stop", "-t", "60", container_name], capture_output=True, timeout=90)
        assert stop.returncode == 0
    finally:
        logs.kill()
        logs.wait()
    state = json.loads(inspect(container_name, "{{json .State}}"))
    log = subprocess.run(["docker", "logs", container_name], capture_output=True, text=True).stdout
    assert state["ExitCode"] not in (0, 137), f"exit {state['ExitCode']}: not a clean stop"  # 137: SIGKILLed
    assert "stopped by SIGTERM in epoch 2 after step" in log
    failure = (stopped / "output" / "failure").read_text()
    assert failure.startswith("stopped by SIGTERM in epoch 2 after step ") and "checkpoint_s3_uri" in failure
    checkpoint = torch.load(stopped / "checkpoints" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["partial"]["epoch"] == 2 and checkpoint["partial"]["batches"] >= 3

    (stopped / "output" / "failure").unlink()  # SageMaker gives the restarted job a fresh output folder
    resumed = subprocess.run(
        [*run, "--rm", *_mounts(stopped), images["train"], "train"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert f"in epoch 2 after step {checkpoint['partial']['batches']}" in resumed.stdout + resumed.stderr
    uninterrupted = subprocess.run(
        [*run, "--rm", *_mounts(straight), images["train"], "train"], capture_output=True, text=True, timeout=600
    )
    assert uninterrupted.returncode == 0, uninterrupted.stdout[-3000:]
    a, b = (
        torch.load(root / "model" / "model.pth", map_location="cpu", weights_only=True) for root in (stopped, straight)
    )
    assert a.keys() == b.keys()
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel()) <= 1e-6


def test_make_local_serve_serves_the_local_train_model_and_make_stop_ends_only_it(local_train, base_image, tmp_path):
    out, _, _, _ = local_train
    port = free_port()
    name = f"dogbreed-test-local-serve-{port}"
    bystander = f"dogbreed-test-bystander-{port}"
    settings = [
        f"TAG={TAG}",
        f"LOCAL_OUT={out}",
        f"LOCAL_STORE={tmp_path / 'store'}",
        f"LOCAL_SERVE_PORT={port}",
        f"LOCAL_SERVE_NAME={name}",
    ]
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", bystander, base_image, "sleep", "300"],
        check=True,
        capture_output=True,
    )
    try:
        result = make("local-serve", *settings, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert (tmp_path / "store" / "dog-breed-classifier" / "model.tar.gz").is_file()
        status, answer = Server(None, port, None).invoke(
            (SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00001.jpg").read_bytes(),
            "dog-breed-classifier/model.tar.gz",
        )
        assert status == 200 and answer["results"][0]["predictions"]
        with tarfile.open(tmp_path / "store" / "dog-breed-classifier" / "model.tar.gz") as packed:
            assert answer["variant"] == json.load(packed.extractfile("metadata.json"))["onnx"]["serve"]
        # The cloud CLI's invoke, pointed at the local container: the same client path as an endpoint.
        invoked = make("invoke", *settings, "LOCAL=true", "TOP_K=2", "TARGETS=dog-breed-classifier/model.tar.gz")
        assert invoked.returncode == 0, invoked.stdout[-2000:] + invoked.stderr[-2000:]
        assert f"dog-breed-classifier/model.tar.gz (the local serving container on 127.0.0.1:{port}):" in invoked.stdout
        assert len([line for line in invoked.stdout.splitlines() if line.startswith("  ")]) == 2
        assert make("stop", *settings).returncode == 0
        running = subprocess.run(["docker", "ps", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
        assert name not in running.split() and bystander in running.split()
    finally:
        subprocess.run(["docker", "rm", "-f", name, bystander], capture_output=True)
