"""Serving cost: requests through MMS with TargetModel routing against in-process inference.

For ResNet18 at batch 1 on the same JPEGs (the sample images re-encoded at
500x375, a typical dogImages photo), in one run:

- in-process: decode + preprocess + forward + encode, called directly;
- through MMS: ``POST /invocations`` with ``X-Amzn-SageMaker-Target-Model`` on
  a keep-alive connection, one worker, concurrency 1 (= the worker count);
- cold start: the first request to a target that is not loaded yet (unpack +
  load + answer), against a warm request.

The two sides alternate request by request (one in-process, one through
MMS, ...), so the machine's noise falls on both alike. Requests are
sequential: concurrency 1 equals the single worker, so requests/s is the
number of requests over the time they took.

    python bench/serve_latency.py [--requests 200] [--image-size 224]
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

import urllib3
from PIL import Image

from dogbreed.artifact import load_artifact, make_metadata, save_artifact
from dogbreed.models import build_model
from dogbreed.package import pack_artifact
from dogbreed.serving.inference import Options, Predictor, decode_request, encode_response

SAMPLE = Path(__file__).resolve().parent.parent / "local_data" / "sample"
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


def in_process_call(predictor: Predictor, body: bytes) -> float:
    t0 = time.perf_counter()
    options = Options()
    images = decode_request(body, "image/jpeg", options, predictor.draft_size)
    encode_response(predictor.probabilities(images), predictor.labels, options, TARGET)
    return time.perf_counter() - t0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        for port in range(23000, 32000):
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=224)
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    server = None
    try:
        folders = sorted(p.name for p in (SAMPLE / "train").iterdir())
        model_dir = work / "artifact"
        save_artifact(model_dir, build_model("resnet18", len(folders)).state_dict(), make_metadata(
            architecture="resnet18", class_folders=folders, input_size=opts.image_size,
            mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], metrics={}, hyperparameters={}))
        store = work / "store"
        pack_artifact(model_dir, store / TARGET)
        pack_artifact(model_dir, store / COLD_TARGET)
        bodies = photos(20)
        predictor = Predictor(*load_artifact(model_dir))

        port = free_port()
        env = dict(os.environ, SAGEMAKER_BIND_TO_PORT=str(port), DOGBREED_BIND_HOST="127.0.0.1",
                   DOGBREED_UNPACK_DIR=str(work / "unpacked"), SAGEMAKER_MODEL_SERVER_WORKERS="1")
        log = open(work / "server.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "dogbreed.serving.server", "--model-store", str(store)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        http = urllib3.PoolManager(maxsize=1)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if http.request("GET", url + "/ping", timeout=2, retries=False).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"server did not start:\n{(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)

        def invoke(body: bytes, target: str) -> float:
            t0 = time.perf_counter()
            response = http.request("POST", url + "/invocations", body=body, retries=False, headers={
                "Content-Type": "image/jpeg", "X-Amzn-SageMaker-Target-Model": target})
            took = time.perf_counter() - t0
            if response.status != 200:
                raise SystemExit(f"request failed: {response.status} {response.data[:300]!r}")
            return took

        for body in bodies[:10]:
            invoke(body, TARGET)
            in_process_call(predictor, body)
        warm = [invoke(bodies[i % len(bodies)], TARGET) for i in range(20)]
        cold = invoke(bodies[0], COLD_TARGET)
        local, served = [], []
        for i in range(opts.requests):
            body = bodies[i % len(bodies)]
            local.append(in_process_call(predictor, body))
            served.append(invoke(body, TARGET))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)

    baseline, served = summary(local), summary(served)
    warm_ms = statistics.median(warm) * 1000
    result = {
        "model": "resnet18", "image_size": opts.image_size, "batch": 1, "workers": 1, "cpus": os.cpu_count(),
        "in_process": baseline, "mms": served,
        "p50_ratio": round(served["p50_ms"] / baseline["p50_ms"], 3),
        "throughput_ratio": round(served["requests_per_s"] / baseline["requests_per_s"], 3),
        "warm_ms": round(warm_ms, 1), "cold_start_ms": round(cold * 1000, 1),
        "cold_start_extra_ms": round(cold * 1000 - warm_ms, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
