"""SageMaker local mode with this project's images: ``make local-train``, ``make local-hpo`` and ``make local-serve``.

The SageMaker Python SDK (v2) runs the training image through
``docker compose`` exactly as a training job would (``/opt/ml`` mounts,
hyperparameters.json, ``train``), with ``file://`` input and output. It makes
no AWS call: the role is a placeholder, telemetry is off, and region and
credentials get inert defaults when the environment has none.

    dogbreed local train --image dogbreed-train:TAG --data local_data/sample \\
        --output build/local-train -H epochs=3 -H image-size=64
    dogbreed local hpo --image dogbreed-train:TAG --data local_data/sample \\
        --output build/local-hpo --grid learning-rate=0.001,0.01 --grid batch-size=16,32
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from dogbreed import settings, workflows
from dogbreed.errors import DogbreedError, run_cli
from dogbreed.sagemaker_env import TORCH_DISTRIBUTED
from dogbreed.workflows import local_serving

PLACEHOLDER_ROLE = "arn:aws:iam::111111111111:role/dogbreed-local-mode"
# The network the SDK's docker-compose file declares for local-mode jobs.
LOCAL_NETWORK = "sagemaker-local"


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


def local_session(work_dir: Path):
    # Inert defaults: local mode needs a region and some credentials to exist, and calls nothing with them.
    os.environ.setdefault("AWS_DEFAULT_REGION", settings.text("AWS_REGION", "us-east-1"))
    if not (settings.text("AWS_ACCESS_KEY_ID") or settings.text("AWS_PROFILE")):
        os.environ["AWS_ACCESS_KEY_ID"] = "local-mode"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local-mode"
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    from sagemaker.local import LocalSession

    session = LocalSession(sagemaker_config=workflows.SDK_CONFIG)
    work_dir.mkdir(parents=True, exist_ok=True)
    session.config = {"local": {"local_code": True, "container_root": str(work_dir.resolve())}}
    return session


def run_training(
    image: str,
    data: Path,
    output: Path,
    hyperparameters: dict[str, Any],
    program: str = "train_model.py",
    job_name: str | None = None,
    instance_count: int = 1,
) -> dict[str, Path]:
    """One local-mode training job; returns the paths of model.tar.gz and output.tar.gz.

    ``instance_count`` above 1 starts that many containers (algo-1, algo-2, ...) on one compose network, with
    torch_distributed on: the image's toolkit runs the script under torchrun across them.
    """
    from sagemaker.estimator import Estimator

    if not data.is_dir():
        raise LocalModeError(f"data folder {data} does not exist")
    check_docker(image)
    output.mkdir(parents=True, exist_ok=True)
    session = local_session(output / ".container-root")
    estimator = Estimator(
        image_uri=image,
        role=PLACEHOLDER_ROLE,
        instance_count=instance_count,
        instance_type="local",
        output_path=f"file://{output.resolve()}",
        hyperparameters={**hyperparameters, **({TORCH_DISTRIBUTED: "true"} if instance_count > 1 else {})},
        environment={"SAGEMAKER_PROGRAM": program},
        sagemaker_session=session,
        disable_profiler=True,
    )
    before = set(containers_of(image))
    network_existed = network_exists(LOCAL_NETWORK)
    try:
        estimator.fit({"training": f"file://{data.resolve()}"}, job_name=job_name, wait=True, logs=True)
    except Exception as exc:  # the SDK raises RuntimeError/UnexpectedStatusException for a failed container
        raise LocalModeError(f"local training job failed: {str(exc).splitlines()[0]}") from exc
    finally:
        # docker compose leaves the job's stopped container behind; remove it, and only it.
        leftovers = sorted(set(containers_of(image)) - before)
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
        # ... and the compose network it created for the job, when it was not there before.
        if not network_existed:
            subprocess.run(["docker", "network", "rm", LOCAL_NETWORK], capture_output=True)
    job = estimator.latest_training_job
    if job is None:
        raise LocalModeError("the SDK started no local training job")
    job_dir = output / job.name
    artifacts = {"model": job_dir / "model.tar.gz", "output": job_dir / "output.tar.gz"}
    if not artifacts["model"].is_file():
        # Older SDKs write straight into output_path.
        artifacts = {"model": output / "model.tar.gz", "output": output / "output.tar.gz"}
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
