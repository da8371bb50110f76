"""make push against a real registry on 127.0.0.1 (Debian's docker-registry)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import urllib.request

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed.workflows.registry import push
from tests.conftest import free_port
from tests.container.conftest import TAG, inspect, make


@pytest.fixture
def local_registry(tmp_path):
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "registry did not start"
                time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)
        listed = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
        ).stdout.split()
        leftovers = [ref for ref in listed if ref.startswith(address)]
        if leftovers:
            subprocess.run(["docker", "rmi", *leftovers], capture_output=True)


def pulls_back(reference: str) -> bool:
    subprocess.run(["docker", "rmi", reference], capture_output=True)
    return subprocess.run(["docker", "pull", reference], capture_output=True).returncode == 0


@pytest.fixture
def small_images(base_image):
    """Stand-ins for the two images: make push runs exactly as for the 5.5 GB ones, in seconds."""
    names = {"TRAIN_IMAGE": "dogbreed-push-train", "SERVE_IMAGE": "dogbreed-push-serve"}
    for name in names.values():
        subprocess.run(["docker", "tag", base_image, f"{name}:{TAG}"], check=True)
    yield names
    subprocess.run(["docker", "rmi", *(f"{name}:{TAG}" for name in names.values())], capture_output=True)


def test_make_push_to_any_registry_and_pull_back(small_images, local_registry, base_image):
    result = make(
        "push",
        f"TAG={TAG}",
        f"REGISTRY={local_registry}",
        "LATEST=true",
        *(f"{k}={v}" for k, v in small_images.items()),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name in small_images.values():
        for tag in (TAG, "latest"):
            assert f"pushed {local_registry}/{name}:{tag}" in result.stdout
            assert pulls_back(f"{local_registry}/{name}:{tag}")
    # Built on a stand-in base (no registry answered make base-image): make push says so before pushing.
    stand_in = inspect(base_image, '{{index .Config.Labels "dogbreed.base.stand-in"}}')
    warned = [line for line in result.stderr.splitlines() if "built on a stand-in base image" in line]
    assert len(warned) == (2 if stand_in else 0), result.stderr[-2000:]


def test_ecr_flow_creates_the_repository_logs_in_and_pushes(local_registry, base_image, tmp_path, monkeypatch):
    """The ECR calls are stubbed against the real service model; the pushes go to a real registry."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # docker login writes here, not ~/.docker
    tiny = f"dogbreed-tiny:{TAG}"
    subprocess.run(["docker", "tag", base_image, tiny], check=True)
    ecr = boto3.client("ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    sts = boto3.client("sts", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    token = base64.b64encode(b"AWS:token").decode()
    try:
        with Stubber(ecr) as ecr_stub, Stubber(sts) as sts_stub:
            sts_stub.add_response(
                "get_caller_identity",
                {"Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/x", "UserId": "x"},
                {},
            )
            ecr_stub.add_response(
                "get_authorization_token",
                {"authorizationData": [{"authorizationToken": token, "proxyEndpoint": f"http://{local_registry}"}]},
                {"registryIds": ["123456789012"]},
            )
            ecr_stub.add_client_error(
                "describe_repositories",
                "RepositoryNotFoundException",
                expected_params={"registryId": "123456789012", "repositoryNames": ["dogbreed-tiny"]},
            )
            ecr_stub.add_response(
                "create_repository",
                {"repository": {"repositoryUri": f"{local_registry}/dogbreed-tiny"}},
                expected_params={
                    "registryId": "123456789012",
                    "repositoryName": "dogbreed-tiny",
                    "imageScanningConfiguration": {"scanOnPush": True},
                },
            )
            pushed = push(
                [tiny], registry=None, region="eu-west-1", account=None, latest=True, clients=(ecr, sts, "eu-west-1")
            )
            ecr_stub.assert_no_pending_responses()
            sts_stub.assert_no_pending_responses()
        assert pushed == [f"{local_registry}/dogbreed-tiny:{TAG}", f"{local_registry}/dogbreed-tiny:latest"]
        assert all(pulls_back(ref) for ref in pushed)
    finally:
        subprocess.run(["docker", "rmi", tiny], capture_output=True)


def test_push_errors_are_one_line(images, tmp_path):
    result = make(
        "push",
        f"TAG={TAG}",
        "REGION=",
        "AWS_REGION=",
        "AWS_DEFAULT_REGION=",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
    )
    assert result.returncode != 0
    assert "push: error: no AWS region: set REGION" in result.stderr
    assert "Traceback" not in result.stderr
