"""The serving image on this machine with what local mode trained: ``make local-serve``.

The newest ``model.tar.gz`` of each architecture under the local-mode outputs goes into a model store under its
TargetModel path, and the serving image serves that store read-only on 127.0.0.1, in routing mode, as a
SageMaker multi-model endpoint's targets would be named.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dogbreed import workflows
from dogbreed.errors import DogbreedError
from dogbreed.health import wait_until_healthy

# Architecture folder under the local-mode outputs -> its TargetModel path; the first is required.
LOCAL_TARGETS = {
    "resnet18": "dog-breed-classifier/model.tar.gz",
    "mobilenet_v2": "dog-breed-classifier-mobile/model.tar.gz",
}
START_TIMEOUT_S = 120


class LocalServeError(DogbreedError):
    pass


def newest_artifact(folder: Path) -> Path | None:
    """The most recently written ``model.tar.gz`` under ``folder``; None when there is none."""
    archives = [p for p in folder.rglob("model.tar.gz") if p.is_file()] if folder.is_dir() else []
    return max(archives, key=lambda p: p.stat().st_mtime, default=None)


def build_store(outputs: Path, store: Path) -> list[str]:
    """Copy the newest model of each architecture into ``store``; the targets it now serves."""
    targets: list[str] = []
    for architecture, target in LOCAL_TARGETS.items():
        archive = newest_artifact(outputs / architecture)
        if archive is None:
            if not targets:
                raise LocalServeError(f"no local-train model in {outputs / architecture}; run make local-train")
            print(f"note: no {architecture} yet (make local-train MODEL={architecture} adds one)")
            continue
        (store / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, store / target)
        targets.append(target)
    return targets


def serve(image: str, outputs: Path, store: Path, port: int, name: str) -> None:
    problem = workflows.docker_engine_problem()
    if problem:
        raise LocalServeError(f"no Docker engine is running ({problem})")
    targets = build_store(outputs, store)
    publish, mount = f"127.0.0.1:{port}:8080", f"{store.resolve()}:/opt/ml/models:ro"
    started = subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "-p", publish, "-v", mount, image, "serve"],
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        raise LocalServeError(f"docker run {image} failed: {started.stderr.strip()}")
    if not wait_until_healthy(f"http://127.0.0.1:{port}/ping", START_TIMEOUT_S):
        raise LocalServeError(f"{name} did not answer /ping within {START_TIMEOUT_S} s; see docker logs {name}")
    print(f"serving {', '.join(targets)} from {store} at http://127.0.0.1:{port} (make stop to end it)")
