"""A real MMS server process for tests, on a free 127.0.0.1 port, always stopped afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO_ROOT, free_port


class Server:
    def __init__(self, process: subprocess.Popen | None, port: int, log_path: Path | None):
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60
    ) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def invoke(self, body: bytes, target: str | None = None, content_type: str = "application/x-image", **headers: str):
        all_headers = {"Content-Type": content_type, **headers}
        if target is not None:
            all_headers["X-Amzn-SageMaker-Target-Model"] = target
        return self.json("POST", "/invocations", body, all_headers)

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/ping", timeout=5)[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def load_model(server: Server, name: str, url) -> tuple[int, dict]:
    """``POST /models`` in multi-model mode, as the SageMaker platform sends it."""
    body = json.dumps({"model_name": name, "url": str(url)}).encode()
    return server.json("POST", "/models", body, {"Content-Type": "application/json"})


def load_until_refused(server: Server, url, prefix: str, most: int) -> tuple[list[str], int, dict]:
    """Load ``url`` as PREFIX0, PREFIX1 ... until a load is not 200: the names loaded, that status and answer."""
    loaded: list[str] = []
    for i in range(most):
        status, answer = load_model(server, f"{prefix}{i}", url)
        if status != 200:
            return loaded, status, answer
        loaded.append(f"{prefix}{i}")
    pytest.fail(f"{most} loads fitted")


def stop(process: subprocess.Popen, timeout: float = 60) -> float:
    """SIGTERM the launcher; returns how long it took to exit."""
    started = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return time.monotonic() - started


def stop_and_check_nothing_left(server: Server) -> float:
    """Stop the server; fail if MMS, its JVM or a worker outlives it."""
    descendants = psutil.Process(server.process.pid).children(recursive=True)
    assert descendants, "the launcher started no MMS processes"
    took = stop(server.process)
    _, alive = psutil.wait_procs(descendants, timeout=30)
    for process in alive:
        process.kill()
    assert not alive, f"left behind: {[p.pid for p in alive]}"
    return took


@contextmanager
def running_server(model_store: Path, tmp_path: Path, **env: str):
    port = free_port()
    log_path = tmp_path / f"mms-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    child_env.update(
        {
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "DOGBREED_BIND_HOST": "127.0.0.1",
            "DOGBREED_UNPACK_DIR": str(tmp_path / f"unpacked-{port}"),
        }
    )
    child_env.update(env)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dogbreed", "serve", "--model-store", str(model_store)],
            env=child_env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log_path)
    try:
        deadline = time.monotonic() + 120
        while not server.healthy():
            assert process.poll() is None, f"server exited:\n{server.log()[-3000:]}"
            assert time.monotonic() < deadline, f"server not healthy:\n{server.log()[-3000:]}"
            time.sleep(0.3)
        yield server
    finally:
        if process.poll() is None:
            stop_and_check_nothing_left(server)
