"""Container tests: real images, real containers, reached only on 127.0.0.1 published ports.

Without a Docker engine they skip, except in CI (CI=true), where they must run.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.conftest import REPO_ROOT

TAG = os.environ.get("CONTAINER_TEST_TAG", "citest")
TRAIN_IMAGE = f"dogbreed-train:{TAG}"
SERVE_IMAGE = f"dogbreed-serve:{TAG}"


def engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config, items):
    container_items = [i for i in items if "tests/container/" in str(i.fspath)]
    for item in container_items:
        item.add_marker(pytest.mark.container)
    if not container_items or engine_available():
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("CI=true but no Docker engine is running: container tests must run in CI")
    skip = pytest.mark.skip(reason="no Docker engine running (start dockerd to run the container tests)")
    for item in container_items:
        item.add_marker(skip)


def make(*args: str, timeout: float = 1800, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}
    )


def inspect(name: str, template: str, missing_ok: bool = False) -> str:
    """``docker inspect --format TEMPLATE NAME`` for a container or an image, stripped. A missing object fails the
    test, or gives ``""`` with ``missing_ok``."""
    result = subprocess.run(["docker", "inspect", "--format", template, name], capture_output=True, text=True)
    assert result.returncode == 0 or missing_ok, result.stderr
    return result.stdout.strip() if result.returncode == 0 else ""


def remove_if_untagged(image: str) -> None:
    """Remove an image the test tag used to name, once a rebuild has left it with no tag: every run would otherwise
    leave both old images (about 6.5 GB) behind. An image still tagged or used by a container is kept."""
    if inspect(image, "{{len .RepoTags}}", missing_ok=True) == "0":
        subprocess.run(["docker", "rmi", image], capture_output=True)


@pytest.fixture(scope="session")
def images():
    """Both images, built by make as a user builds them."""
    previous = [inspect(ref, "{{.Id}}", missing_ok=True) for ref in (TRAIN_IMAGE, SERVE_IMAGE)]
    result = make("build", f"TAG={TAG}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for old in filter(None, previous):
        remove_if_untagged(old)
    return {"train": TRAIN_IMAGE, "serve": SERVE_IMAGE}


@pytest.fixture(scope="session")
def base_image() -> str:
    """What the builds start FROM, as make base-image found it (the pinned base or its local stand-in): a small
    image that is present."""
    result = make("base-image")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return (REPO_ROOT / "build" / "base-image.ref").read_text().strip()


@pytest.fixture
def container_name():
    """A unique container name; the container is removed afterwards whatever happened."""
    name = f"dogbreed-test-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
