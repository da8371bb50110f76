"""The serving image: curl and the SDK's local client against a real container on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import SAMPLE_DATA, free_port
from tests.container.conftest import inspect
from tests.hostile_archives import bomb, symlink_chain
from tests.serving import Server, load_model, load_until_refused

RESNET = "dog-breed-classifier/model.tar.gz"
MOBILE = "dog-breed-classifier-mobile/model.tar.gz"
IMAGE_PATH = SAMPLE_DATA / "test" / "003.Cobalt_triangle" / "Cobalt_triangle_00004.jpg"


def _readable(path):
    """The image runs as a non-root user: the mounted store must be world-readable."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


def run_container(image, name, store, *env: str, mount: str = "/opt/ml/models", memory: str | None = None) -> Server:
    port = free_port()
    command = [
        "docker",
        "run",
        "-d",
        *(["--memory", memory, "--memory-swap", memory] if memory else []),
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:8080",
        "-v",
        f"{_readable(store)}:{mount}:ro",
    ]
    for item in env:
        command += ["-e", item]
    subprocess.run([*command, image, "serve"], check=True, capture_output=True)
    server = Server(None, port, None)
    deadline = time.monotonic() + 180
    while not server.healthy():
        running = inspect(name, "{{.State.Running}}", missing_ok=True)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        assert running == "true", logs.stdout[-3000:] + logs.stderr[-3000:]
        assert time.monotonic() < deadline, logs.stdout[-3000:]
        time.sleep(1)
    return server


@pytest.fixture(scope="module")
def serving(images, model_store):
    name = f"dogbreed-test-serve-{free_port()}"
    try:
        yield run_container(images["serve"], name, model_store), name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_image_metadata(images):
    labels = json.loads(inspect(images["serve"], "{{json .Config.Labels}}"))
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    user = inspect(images["serve"], "{{.Config.User}}")
    assert user and user not in ("root", "0")


def test_docker_reports_the_server_healthy_through_ping(images, serving):
    health = json.loads(inspect(images["serve"], "{{json .Config.Healthcheck}}"))
    assert "/ping" in " ".join(health["Test"])
    _, name = serving
    deadline = time.monotonic() + 90
    status = ""
    while time.monotonic() < deadline:
        status = inspect(name, "{{.State.Health.Status}}", missing_ok=True)
        if status == "healthy":
            break
        time.sleep(2)
    assert status == "healthy"


def test_curl_with_the_target_header_reaches_each_model(serving):
    server, _ = serving
    for target in (RESNET, MOBILE):
        result = subprocess.run(
            [
                "curl",
                "-s",
                "-X",
                "POST",
                f"{server.url}/invocations",
                "-H",
                f"X-Amzn-SageMaker-Target-Model: {target}",
                "-H",
                "Content-Type: application/x-image",
                "--data-binary",
                f"@{IMAGE_PATH}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        answer = json.loads(result.stdout)
        assert answer["model"] == target and len(answer["results"][0]["predictions"]) == 4
    assert answer["results"][0]["predictions"][0]["label"] in {
        "Cobalt triangle",
        "Emerald square",
        "Crimson disc",
        "Amber stripes",
    }


def test_sdk_local_runtime_client(serving):
    from sagemaker.core.local.local_session import LocalSagemakerRuntimeClient

    server, _ = serving
    client = LocalSagemakerRuntimeClient(config={"local": {"serving_port": server.port}})
    response = client.invoke_endpoint(
        EndpointName="dog-breed-classifier-multi-endpoint",
        TargetModel=RESNET,
        ContentType="application/x-image",
        Body=IMAGE_PATH.read_bytes(),
    )
    answer = json.loads(response["Body"].read())
    assert answer["results"][0]["predictions"][0]["label"] == "Cobalt triangle"


def test_explanations_inline_and_through_the_local_client(serving, tmp_path):
    """The serving image explains inline (a custom attribute), and make explain reaches it by TargetModel."""
    server, _ = serving
    status, answer = server.invoke(
        IMAGE_PATH.read_bytes(), RESNET, "image/jpeg", **{"X-Amzn-SageMaker-Custom-Attributes": "explain=true"}
    )
    assert status == 200, answer
    explanation = answer["results"][0]["explanation"]
    assert explanation["complete"] and explanation["evaluations"] == 130 and explanation["heatmap_png"]
    gap = sum(explanation["segment_values"]) - (explanation["probability"] - explanation["baseline_probability"])
    assert abs(gap) < 1e-4
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dogbreed",
            "explain",
            str(IMAGE_PATH),
            "--local-port",
            str(server.port),
            "--target",
            MOBILE,
            "--samples",
            "64",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "explanations.json").read_text())
    assert report["images"][0]["explanations"][0]["evaluations"] == 66


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        (b"", "application/x-image", 400),
        (b"not an image", "image/jpeg", 400),
        (b"{oops", "application/json", 400),
        (b"x", "text/plain", 415),
    ],
)
def test_bad_input_is_4xx_and_ping_stays_healthy(serving, body, content_type, status):
    server, _ = serving
    got, answer = server.json(
        "POST", "/invocations", body, {"Content-Type": content_type, "X-Amzn-SageMaker-Target-Model": RESNET}
    )
    assert got == status and answer["message"]
    got, _ = server.invoke(IMAGE_PATH.read_bytes(), "../../etc/passwd")
    assert got == 400
    assert server.healthy()


def test_multi_model_api_in_the_container(images, trained_models, tmp_path, container_name):
    store = tmp_path / "models"
    shutil.copytree(trained_models["resnet18"], store / "resnet")
    server = run_container(images["serve"], container_name, store, "SAGEMAKER_MULTI_MODEL=true")
    body = json.dumps({"model_name": "resnet", "url": "/opt/ml/models/resnet"}).encode()
    status, answer = server.json("POST", "/models", body, {"Content-Type": "application/json"})
    assert status == 200, answer
    assert server.json("POST", "/models", body, {"Content-Type": "application/json"})[0] == 409
    status, answer = server.json(
        "POST", "/models/resnet/invoke", IMAGE_PATH.read_bytes(), {"Content-Type": "application/x-image"}
    )
    assert status == 200 and answer["results"][0]["predictions"][0]["label"] == "Cobalt triangle"
    assert server.json("DELETE", "/models/resnet")[0] == 200
    assert server.json("GET", "/models/resnet")[0] == 404


def test_docker_stop_ends_it_in_seconds(images, model_store, tmp_path, container_name):
    single = tmp_path / "store"
    shutil.copytree(model_store / "dog-breed-classifier", single / "dog-breed-classifier")
    run_container(images["serve"], container_name, single)
    started = time.monotonic()
    subprocess.run(["docker", "stop", "-t", "30", container_name], check=True, capture_output=True)
    took = time.monotonic() - started
    exit_code = inspect(container_name, "{{.State.ExitCode}}", missing_ok=True)
    assert took < 15, f"docker stop took {took:.1f}s"
    assert exit_code in ("0", "143"), exit_code


def test_single_model_mode_as_batch_transform_runs_it(images, trained_models, tmp_path, container_name):
    """A transform job unpacks one model.tar.gz into /opt/ml/model and posts each S3 object as is."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained_models["resnet18"], model_dir)
    server = run_container(
        images["serve"], container_name, model_dir, "SAGEMAKER_MAX_PAYLOAD_IN_MB=6", mount="/opt/ml/model"
    )
    status, answer = server.invoke(IMAGE_PATH.read_bytes(), Accept="application/json")
    assert status == 200, answer
    assert len(answer["results"]) == 1 and answer["results"][0]["predictions"]
    status, answer = server.invoke(b"not an image")
    assert status == 400 and server.healthy()


def _register(server, body):
    status, _, data = server.request("POST", "/models", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return status, json.loads(data)


def test_routing_mode_serves_no_management_api(serving):
    server, _ = serving
    for method, path in (
        ("POST", "/models?model_name=x&url=http://example.com/evil.mar&handler=evil:handle"),
        ("POST", "/models?model_name=fs&url=/"),
        ("DELETE", "/models/model"),
        ("PUT", "/models/model?min_worker=4"),
    ):
        status, _, _ = server.request(method, path)
        assert 400 <= status < 500, (method, path, status)
    status, answer = server.invoke(IMAGE_PATH.read_bytes(), RESNET)
    assert status == 200 and answer["model"] == RESNET
    assert server.healthy()


def test_multi_model_mode_refuses_remote_outside_and_handler_choices(images, trained_models, tmp_path, container_name):
    store = tmp_path / "models"
    shutil.copytree(trained_models["resnet18"], store / "resnet")
    server = run_container(images["serve"], container_name, store, "SAGEMAKER_MULTI_MODEL=true")
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "https://example.com/m.mar",
        "/",
        "/etc",
        "/opt/ml/models",
        "/opt/ml/models/../../etc",
        "/opt/ml/model",
    ):
        status, answer = _register(server, {"model_name": "x", "url": url})
        assert status == 400, (url, answer)
    status, answer = _register(server, {"model_name": "x", "url": "/opt/ml/models/resnet", "handler": "os:system"})
    assert status == 400 and "handler" in answer["message"]
    assert server.json("GET", "/models")[1]["models"] == []
    assert server.healthy()


def _hostile_store(root):
    symlink_chain(root / "chain.tar.gz")
    bomb(root / "bomb.tar.gz", member_mb=64)
    return root


def test_hostile_archives_in_the_container(images, tmp_path, container_name):
    """The image's Python is Debian's 3.11.2, without tarfile's data filter; the links are refused anyway."""
    python = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "python",
            images["serve"],
            "-c",
            "import sys, tarfile; print(sys.version.split()[0], hasattr(tarfile, 'data_filter'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert python == ["3.11.2", "False"], python
    server = run_container(
        images["serve"], container_name, _hostile_store(tmp_path / "store"), "DOGBREED_MAX_MEMBER_MB=32"
    )
    status, answer = server.invoke(IMAGE_PATH.read_bytes(), "chain.tar.gz")
    assert status == 400 and "is a link" in answer["message"]
    status, answer = server.invoke(IMAGE_PATH.read_bytes(), "bomb.tar.gz")
    assert status == 400 and answer["type"] == "ModelArchiveTooLarge"
    left = subprocess.run(
        [
            "docker",
            "exec",
            container_name,
            "find",
            "/tmp",
            "/home",
            "/opt/ml",
            "-name",
            "escaped.txt",
            "-o",
            "-name",
            "*.staging.*",
            "-o",
            "-name",
            "model.pth",
        ],
        capture_output=True,
        text=True,
    )
    assert left.returncode == 0 and left.stdout.strip() == "", left.stdout
    assert server.healthy()


def _alive(name):
    return inspect(name, "{{.State.Running}} {{.State.OOMKilled}}") == "true false"


def test_multi_model_mode_under_a_memory_limit_answers_507_and_never_dies(
    images, trained_models, tmp_path, container_name
):
    store = tmp_path / "models"
    shutil.copytree(trained_models["resnet18"], store / "resnet" / "model")
    server = run_container(images["serve"], container_name, store, "SAGEMAKER_MULTI_MODEL=true", memory="768m")
    url = "/opt/ml/models/resnet/model"
    loaded, status, answer = load_until_refused(server, url, "m", most=150)
    assert status == 507 and answer["type"] == "InsufficientMemory" and answer["message"], answer
    assert _alive(container_name)
    # The process-per-model design held about ten of these in 768 MiB before the kernel killed the container.
    assert len(loaded) >= 20, len(loaded)
    for name in loaded:
        status, result = server.json(
            "POST", f"/models/{name}/invoke", IMAGE_PATH.read_bytes(), {"Content-Type": "image/jpeg"}
        )
        assert status == 200 and result["model"] == name, result
    half = loaded[: len(loaded) // 2]
    for name in half:
        assert server.json("DELETE", f"/models/{name}")[0] == 200
    for i in range(len(half)):
        status, answer = load_model(server, f"new{i}", url)
        assert status == 200, (i, answer)
    _, status, _ = load_until_refused(server, url, "more", most=150)
    assert status == 507 and _alive(container_name) and server.healthy()
    # Explanations need SLIC's memory too: with the budget full they are refused like a load, until models go.
    explain = {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "explain=true,explain_samples=32"}
    status, answer = server.json("POST", f"/models/{loaded[-1]}/invoke", IMAGE_PATH.read_bytes(), explain)
    assert status == 507 and "explanations" in answer["message"], answer
    for name in loaded[-5:]:  # each holds about 13 MiB; SLIC is charged 48
        assert server.json("DELETE", f"/models/{name}")[0] == 200
    status, answer = server.json("POST", "/models/new0/invoke", IMAGE_PATH.read_bytes(), explain)
    assert status == 200 and answer["results"][0]["explanation"]["evaluations"] == 34, answer
    assert _alive(container_name) and server.healthy()
    logs = subprocess.run(["docker", "logs", container_name], capture_output=True, text=True)
    assert "Worker died" not in logs.stdout + logs.stderr


def test_routing_mode_under_a_memory_limit_evicts_and_never_dies(images, trained_models, tmp_path, container_name):
    from dogbreed.package import pack_artifact

    store = tmp_path / "store"
    targets = [f"r{i}/model.tar.gz" for i in range(30)]
    for target in targets:
        pack_artifact(trained_models["resnet18"], store / target)
    server = run_container(images["serve"], container_name, store, memory="700m")
    statuses = []
    for _ in range(2):
        for target in targets:
            status, answer = server.invoke(IMAGE_PATH.read_bytes(), target)
            assert status in (200, 507) and answer["message" if status == 507 else "model"], answer
            statuses.append(status)
    assert statuses.count(200) >= len(targets), statuses
    assert _alive(container_name) and server.healthy()
    logs = subprocess.run(["docker", "logs", container_name], capture_output=True, text=True)
    assert "Worker died" not in logs.stdout + logs.stderr
    assert "least recently used model" in logs.stdout + logs.stderr
