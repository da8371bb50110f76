"""SageMaker local mode with this project's images: ``make local-train``, ``make local-hpo`` and ``make local-serve``.

The SageMaker Python SDK v3's ``ModelTrainer`` runs the training image
through ``docker compose`` exactly as a training job would (``/opt/ml``
mounts, hyperparameters.json, ``train``), with a local folder as input and
``model.tar.gz`` and ``output.tar.gz`` as output. It makes no AWS call:
telemetry is off, and region and credentials get inert defaults when the
environment has none.

    dogbreed local train --image dogbreed-train:TAG --data local_data/sample \\
        --output build/local-train -H epochs=3 -H image-size=64
    dogbreed local hpo --image dogbreed-train:TAG --data local_data/sample \\
        --output build/local-hpo --grid learning-rate=0.001,0.01 --grid batch-size=16,32
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from dogbreed import settings, workflows
from dogbreed.errors import DogbreedError, run_cli
from dogbreed.sagemaker_env import TORCH_DISTRIBUTED
from dogbreed.workflows import local_serving

# The network the SDK's docker-compose file declares for local-mode jobs.
LOCAL_NETWORK = "sagemaker-local"
# Under the output folder: the SDK's working folder per job (compose file, /opt/ml mounts), removed after the job.
CONTAINER_ROOT = ".container-root"


class LocalModeError(DogbreedError):
    pass


def check_docker(image: str) -> None:
    problem = workflows.docker_engine_problem()
    if problem:
        raise LocalModeError(f"no Docker engine is running ({problem}); local mode runs the training image with it")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        raise LocalModeError(f"image {image} not found; build it first (make build-train)")


def containers_of(image: str) -> list[str]:
    listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"ancestor={image}"], capture_output=True, text=True)
    return listed.stdout.split()


def network_exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name], capture_output=True).returncode == 0


def inert_aws_environment() -> str:
    """Local mode needs a region and some credentials to exist, and calls nothing with them; returns the region."""
    region = settings.text("AWS_DEFAULT_REGION") or settings.text("AWS_REGION", "us-east-1")
    os.environ["AWS_DEFAULT_REGION"] = region
    if not (settings.text("AWS_ACCESS_KEY_ID") or settings.text("AWS_PROFILE")):
        os.environ["AWS_ACCESS_KEY_ID"] = "local-mode"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local-mode"
    return region


def new_job_dir(output: Path, program: str) -> Path:
    """``OUTPUT/train-model-YYYYmmdd-HHMMSS[-N]``: a folder no earlier job of this output used."""
    base = f"{Path(program).stem.replace('_', '-')}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    for n in itertools.count():
        job_dir = output / (base if n == 0 else f"{base}-{n}")
        if not job_dir.exists() and not (output / CONTAINER_ROOT / job_dir.name).exists():
            return job_dir
    raise AssertionError("unreachable")


def job_failure(container_root: Path) -> str | None:
    """Why the job failed, from the failure file its containers wrote (the SageMaker contract), or None."""
    failure = container_root / "artifacts" / "output" / "failure"
    if failure.is_file():
        reason = failure.read_text(errors="replace").strip().splitlines()
        return reason[0] if reason else "the training script wrote an empty failure file"
    model = container_root / "artifacts" / "model"
    if not model.is_dir() or not any(model.iterdir()):
        return "the training job wrote no model (see its log above)"
    return None


def train_in_containers(
    image: str, data: Path, container_root: Path, hyperparameters: dict[str, Any], program: str, instance_count: int
) -> str | None:
    """One local-mode job through the SDK's ``ModelTrainer``; its files land under ``container_root``. Returns why
    it failed, or None.

    The SDK raises when docker compose exits non-zero, and returns normally when a container failed but compose
    did not say so (two containers: the one that exits first decides); either way the failure file the
    training script wrote says why, and is the reason given."""
    import boto3
    from sagemaker.core.training.configs import Compute, InputData

    from dogbreed.workflows import sdk

    trainer_module = sdk.trainer_module()
    region = inert_aws_environment()
    trainer = trainer_module.ModelTrainer(
        training_mode=trainer_module.Mode.LOCAL_CONTAINER,
        # A session only so that the SDK reads this project's configuration (telemetry off).
        sagemaker_session=sdk.session(boto3.Session(region_name=region)),
        training_image=image,
        base_job_name="dogbreed-local",
        compute=Compute(instance_type="local_cpu", instance_count=instance_count),
        hyperparameters={**hyperparameters, **({TORCH_DISTRIBUTED: "true"} if instance_count > 1 else {})},
        environment={"SAGEMAKER_PROGRAM": program},
        input_data_config=[InputData(channel_name="training", data_source=str(data.resolve()))],
        local_container_root=str(container_root.resolve()),
    )
    try:
        trainer.train(wait=True, logs=True)
    except RuntimeError as exc:  # the SDK's "Failed to run: [docker compose ...]"
        code = re.search(r"exited with code: (\d+)", str(exc))
        return job_failure(container_root) or f"docker compose exited with code {code.group(1) if code else '?'}"
    return job_failure(container_root)


def run_training(
    image: str,
    data: Path,
    output: Path,
    hyperparameters: dict[str, Any],
    program: str = "train_model.py",
    instance_count: int = 1,
) -> dict[str, Path]:
    """One local-mode training job; returns the paths of its model.tar.gz and output.tar.gz, in a folder of its own
    under ``output``.

    ``instance_count`` above 1 starts that many containers (algo-1, algo-2, ...) on one compose network, with
    torch_distributed on: the image's toolkit runs the script under torchrun across them. A job whose containers
    wrote a failure file is a :class:`LocalModeError` with its reason.
    """
    if not data.is_dir():
        raise LocalModeError(f"data folder {data} does not exist")
    check_docker(image)
    output.mkdir(parents=True, exist_ok=True)
    job_dir = new_job_dir(output, program)
    container_root = output / CONTAINER_ROOT / job_dir.name
    container_root.mkdir(parents=True)
    before = set(containers_of(image))
    network_existed = network_exists(LOCAL_NETWORK)
    containers = "1 container" if instance_count == 1 else f"{instance_count} containers"
    print(f"local training job {job_dir.name}: {program} in {containers} of {image}", flush=True)
    try:
        failure = train_in_containers(image, data, container_root, hyperparameters, program, instance_count)
        if failure:
            raise LocalModeError(f"local training job failed: {failure}")
        job_dir.mkdir()
        artifacts = {"model": job_dir / "model.tar.gz", "output": job_dir / "output.tar.gz"}
        for name, path in artifacts.items():
            shutil.move(container_root / "compressed_artifacts" / f"{name}.tar.gz", path)
    finally:
        # docker compose leaves the job's stopped containers behind; remove them, and only them.
        leftovers = sorted(set(containers_of(image)) - before)
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
        # ... and the compose network it created for the job, when it was not there before.
        if not network_existed:
            subprocess.run(["docker", "network", "rm", LOCAL_NETWORK], capture_output=True)
        shutil.rmtree(container_root, ignore_errors=True)
        with contextlib.suppress(OSError):  # the folder of working folders, when no other job is using it
            container_root.parent.rmdir()
    return artifacts


def read_metrics(output_archive: Path) -> dict[str, Any]:
    with tarfile.open(output_archive) as tar:
        member = next((m for m in tar.getmembers() if Path(m.name).name == "metrics.json"), None)
        packed = tar.extractfile(member) if member is not None else None
        if packed is None:
            raise LocalModeError(f"{output_archive} holds no metrics.json")
        return json.load(packed)


def get_args_parser(prog: str = "dogbreed local") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "hpo"):
        p = sub.add_parser(name)
        p.add_argument("--image", required=True, help="the training image, e.g. dogbreed-train:TAG")
        p.add_argument("--data", type=Path, required=True, help="folder holding train/ valid/ test/")
        p.add_argument("--output", type=Path, required=True)
        p.add_argument("-H", "--hyperparameter", action="append", default=[], metavar="NAME=VALUE")
    sub.choices["train"].add_argument("--program", default="train_model.py", choices=["train_model.py", "hpo.py"])
    sub.choices["train"].add_argument(
        "--instance-count",
        type=int,
        default=1,
        help="containers; above 1, data-parallel training with torch_distributed",
    )
    sub.choices["hpo"].add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="values to try for one hyperparameter; trials are the product",
    )
    serve = sub.add_parser("serve", help="serve the newest local-train models with the serving image")
    serve.add_argument("--image", required=True, help="the serving image, e.g. dogbreed-serve:TAG")
    serve.add_argument("--outputs", type=Path, required=True, help="local-train's outputs, a folder per architecture")
    serve.add_argument("--store", type=Path, required=True, help="the model store to fill and serve")
    serve.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1")
    serve.add_argument("--name", default="dogbreed-local-serve", help="the container's name (make stop stops it)")
    newest = sub.add_parser("newest", help="print the newest model.tar.gz under a folder (nothing when none)")
    newest.add_argument("folder", type=Path)
    return parser


def run(argv: list[str] | None = None, prog: str = "dogbreed local") -> int:
    args = get_args_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    # The containers' log and this command's lines are what matter; the SDK's and botocore's INFO lines (credentials
    # found, compose looked up, the working folder's paths) only repeat them.
    for name in ("sagemaker", "sagemaker.config", "botocore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return run_cli(prog, lambda: run_command(args))


def run_command(args: argparse.Namespace) -> int:
    """One subcommand; returns its exit code."""
    if args.command == "serve":
        local_serving.serve(args.image, args.outputs, args.store, args.port, args.name)
        return 0
    if args.command == "newest":
        print(local_serving.newest_artifact(args.folder) or "")
        return 0
    hyperparameters = workflows.parse_pairs(args.hyperparameter, "-H", LocalModeError)
    if args.command == "train":
        if args.instance_count < 1:
            raise LocalModeError(f"--instance-count must be at least 1, got {args.instance_count}")
        artifacts = run_training(
            args.image, args.data, args.output, hyperparameters, args.program, instance_count=args.instance_count
        )
        print(f"model:  {artifacts['model']}\noutput: {artifacts['output']}")
        return 0
    grid = {k: v.split(",") for k, v in workflows.parse_pairs(args.grid, "--grid", LocalModeError).items()}
    if not grid:
        raise LocalModeError("give at least one --grid NAME=V1,V2")
    trials = []
    for values in itertools.product(*grid.values()):
        trial = dict(zip(grid, values, strict=True))
        artifacts = run_training(
            args.image, args.data, args.output / "trials", {**hyperparameters, **trial}, program="hpo.py"
        )
        metrics = read_metrics(artifacts["output"])
        trials.append(
            {"hyperparameters": trial, "val_accuracy": metrics["val_accuracy"], "model": str(artifacts["model"])}
        )
        print(f"trial {trial}: val_accuracy={metrics['val_accuracy']:.4f}")
    best = max(trials, key=lambda t: t["val_accuracy"])
    (args.output / "trials.json").write_text(json.dumps({"trials": trials, "best": best}, indent=2))
    print(f"best: {best['hyperparameters']} val_accuracy={best['val_accuracy']:.4f} ({best['model']})")
    return 0
