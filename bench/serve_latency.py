"""Serving cost: requests through MMS with TargetModel routing against in-process inference.

For ResNet18 at batch 1 on the same JPEGs (the sample images re-encoded at
500x375, a typical dogImages photo), in one run:

- in-process: decode + preprocess + forward + encode with torch eager on the
  same weights, called directly (the reference the server is held against);
- through MMS: ``POST /invocations`` with ``X-Amzn-SageMaker-Target-Model`` on
  a keep-alive connection, one worker, concurrency 1 (= the worker count);
- with ``--baseline-ref REF``: the same through the server as the project's
  code at git revision REF serves it (its ``src/`` from ``git archive``, in
  the same venv), to measure what a change costs;
- cold start: the first request to a target that is not loaded yet (unpack +
  load + answer), against a warm request.

The sides alternate request by request (in-process, server, baseline server,
in an order that rotates every round), so the machine's noise falls on all
alike. Requests are sequential:
concurrency 1 equals the single worker, so requests/s is the number of
requests over the time they took.

    python bench/serve_latency.py [--requests 200] [--image-size 224] [--baseline-ref 25b9aaf]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import urllib3
from PIL import Image

from dogbreed.artifact import load_artifact, make_metadata, save_artifact
from dogbreed.models import build_model
from dogbreed.package import pack_artifact
from dogbreed.serving.inference import Options, decode_image, decode_request, encode_response
from dogbreed.training.export import write_onnx_variants
from dogbreed.transforms import eval_transform

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "local_data" / "sample"
TARGET = "dog-breed-classifier/model.tar.gz"
COLD_TARGET = "cold/model.tar.gz"


def photos(count: int) -> list[bytes]:
    bodies = []
    for path in sorted((SAMPLE / "test").rglob("*.jpg"))[:count]:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((500, 375), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
        bodies.append(buffer.getvalue())
    return bodies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(latencies, 50) * 1000, 2), "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "requests_per_s": round(len(latencies) / sum(latencies), 2)}


class TorchEager:
    """The artifact's torch model in-process: what serving ran before ONNX Runtime."""

    def __init__(self, model_dir: Path):
        self.model, metadata = load_artifact(model_dir)
        self.labels = metadata["labels"]
        self.transform = eval_transform(metadata["input_size"], metadata["mean"], metadata["std"])

    @torch.inference_mode()
    def __call__(self, body: bytes) -> float:
        t0 = time.perf_counter()
        options = Options()
        images = [self.transform(decode_image(data)) for data in decode_request(body, "image/jpeg", options)]
        probabilities = torch.softmax(self.model(torch.stack(images)), 1).numpy()
        encode_response(probabilities, self.labels, options, TARGET)
        return time.perf_counter() - t0


def free_port(taken: set[int]) -> int:
    """A free 127.0.0.1 port not in ``taken`` (a server started before takes seconds to bind its own)."""
    import socket

    for port in range(23000, 32000):
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                taken.add(port)
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class Served:
    """One server process on a free 127.0.0.1 port, called over one keep-alive connection."""

    ports: set[int] = set()

    def __init__(self, name: str, store: Path, work: Path, pythonpath: Path | None = None):
        self.name = name
        self.port = free_port(self.ports)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"{name}.log"
        env = dict(os.environ, SAGEMAKER_BIND_TO_PORT=str(self.port), DOGBREED_BIND_HOST="127.0.0.1",
                   DOGBREED_UNPACK_DIR=str(work / f"unpacked-{name}"), SAGEMAKER_MODEL_SERVER_WORKERS="1")
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "dogbreed.serving.server", "--model-store",
                                             str(store)], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.http = urllib3.PoolManager(maxsize=1)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.http.request("GET", self.url + "/ping", timeout=2, retries=False).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"{self.name} server did not start:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.3)

    def invoke(self, body: bytes, target: str) -> float:
        t0 = time.perf_counter()
        response = self.http.request("POST", self.url + "/invocations", body=body, retries=False, headers={
            "Content-Type": "image/jpeg", "X-Amzn-SageMaker-Target-Model": target})
        took = time.perf_counter() - t0
        if response.status != 200:
            raise SystemExit(f"{self.name}: request failed: {response.status} {response.data[:300]!r}")
        return took

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def baseline_source(ref: str, work: Path) -> Path:
    """The project's src/ at git revision ``ref``."""
    dest = work / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def make_store(work: Path, image_size: int) -> tuple[Path, Path]:
    """A random-init ResNet18 artifact with its fp32 ONNX graph, packed as two targets."""
    folders = sorted(p.name for p in (SAMPLE / "train").iterdir())
    model_dir = work / "artifact"
    model = build_model("resnet18", len(folders)).eval()
    metadata = make_metadata(architecture="resnet18", class_folders=folders, input_size=image_size,
                             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], metrics={}, hyperparameters={})
    metadata["onnx"] = write_onnx_variants(model, model_dir, image_size,
                                           parity_batches=[torch.randn(2, 3, image_size, image_size)])
    save_artifact(model_dir, model.state_dict(), metadata)
    store = work / "store"
    pack_artifact(model_dir, store / TARGET)
    pack_artifact(model_dir, store / COLD_TARGET)
    return model_dir, store


def measure(servers: list[Served], in_process_call: TorchEager, bodies: list[bytes], requests: int) -> dict:
    for body in bodies[:10]:
        in_process_call(body)
        for server in servers:
            server.invoke(body, TARGET)
    warm = {s.name: statistics.median([s.invoke(bodies[i % len(bodies)], TARGET) for i in range(20)])
            for s in servers}
    cold = {s.name: s.invoke(bodies[0], COLD_TARGET) for s in servers}
    local: list[float] = []
    served: dict[str, list[float]] = {s.name: [] for s in servers}
    # The order rotates every round: a side that always ran right after in-process inference would find
    # torch's threads in this process still spinning.
    sides = [lambda body: local.append(in_process_call(body))]
    sides += [lambda body, s=server: served[s.name].append(s.invoke(body, TARGET)) for server in servers]
    for i in range(requests):
        body = bodies[i % len(bodies)]
        for k in range(len(sides)):
            sides[(i + k) % len(sides)](body)
    baseline = summary(local)
    result: dict = {"in_process": baseline}
    for name, latencies in served.items():
        stats = summary(latencies)
        result[name] = {**stats, "p50_ratio": round(stats["p50_ms"] / baseline["p50_ms"], 3),
                        "throughput_ratio": round(stats["requests_per_s"] / baseline["requests_per_s"], 3),
                        "warm_ms": round(warm[name] * 1000, 1), "cold_start_ms": round(cold[name] * 1000, 1),
                        "cold_start_extra_ms": round((cold[name] - warm[name]) * 1000, 1)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--baseline-ref", help="also serve the project's code at this git revision, alternating")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    servers: list[Served] = []
    try:
        model_dir, store = make_store(work, opts.image_size)
        predictor = TorchEager(model_dir)
        servers.append(Served("mms", store, work))
        if opts.baseline_ref:
            servers.append(Served(f"mms@{opts.baseline_ref}", store, work, baseline_source(opts.baseline_ref, work)))
        for server in servers:
            server.wait_ready()
        result = measure(servers, predictor, photos(20), opts.requests)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    if opts.baseline_ref:
        new, old = result["mms"], result[f"mms@{opts.baseline_ref}"]
        result["vs_baseline"] = {"p50_ratio": round(new["p50_ms"] / old["p50_ms"], 3),
                                 "throughput_ratio": round(new["requests_per_s"] / old["requests_per_s"], 3)}
    print(json.dumps({"model": "resnet18", "image_size": opts.image_size, "batch": 1, "workers": 1,
                      "cpus": os.cpu_count(), **result}))


if __name__ == "__main__":
    main()
