"""Serving speed: the server (MMS + ONNX Runtime) against torch eager in-process, ONNX Runtime in-process
and TorchServe, in one run.

ResNet18 (``--model``) at batch 1 on the same JPEGs (the sample images re-encoded at
500x375, a typical dogImages photo), random-init weights:

- ``torch_in_process``: decode + preprocess + forward + encode with torch
  eager on the same weights, called directly: the reference;
- ``ort_in_process`` and ``ort_int8_in_process``: the same with this
  project's ONNX Runtime predictor, on the fp32 and the int8 graph: the
  limits a server can approach;
- ``mms_fp32`` and ``mms_int8``: ``POST /invocations`` to this project's
  server, one worker, keep-alive; two targets packed from the same weights,
  one serving the fp32 graph and one the int8 graph (calibrated on the
  photos; the accuracy gate is not applied to random weights);
- ``torchserve`` (``--torchserve``): TorchServe 0.12 serving the same torch
  weights with an equivalent handler (``bench/torchserve_handler.py``: the
  same decode, preprocessing and answer), one worker; TorchServe is
  installed only for the benchmark (``make bench-serve`` puts it in
  ``build/torchserve``);
- ``--baseline-ref REF``: the server as the project's code at git revision
  REF serves it (its ``src/`` from ``git archive``, in the same venv); REF
  must read the same archive format;
- cold start: the first request to a target that is not loaded yet, against
  a warm request.

Concurrency 1: the sides take turns request by request, in an order that
rotates every round, so the machine's noise falls on all alike; requests/s
is the number of requests over the time they took. Concurrency 2: two
clients at once, in alternating blocks per server.

    python bench/serve_latency.py [--requests 200] [--model resnet18] [--image-size 224] [--torchserve]
        [--baseline-ref REF]
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import urllib3
from PIL import Image

from dogbreed.artifact import read_metadata
from dogbreed.images import open_rgb
from dogbreed.package import pack_artifact
from dogbreed.preprocess import eval_array
from dogbreed.serving.inference import Predictor, decode_image, encode_response, parse_body
from dogbreed.training.artifact import load_artifact, make_metadata, save_artifact
from dogbreed.training.export import write_onnx_variants
from dogbreed.training.models import build_model
from dogbreed.training.transforms import eval_transform

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "local_data" / "sample"
TORCHSERVE_HOME = REPO / "build" / "torchserve"
TARGETS = {"mms_fp32": "fp32/model.tar.gz", "mms_int8": "int8/model.tar.gz"}
COLD_TARGET = "cold/model.tar.gz"
BLOCK = 40


def photos(count: int) -> list[bytes]:
    bodies = []
    for path in sorted((SAMPLE / "test").rglob("*.jpg"))[:count]:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((500, 375), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
        bodies.append(buffer.getvalue())
    return bodies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "requests_per_s": round(len(latencies) / sum(latencies), 2),
    }


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


# ---- in-process sides ------------------------------------------------------------------------------------


class TorchEager:
    """The artifact's torch model in-process: what serving ran before ONNX Runtime."""

    def __init__(self, model_dir: Path):
        self.model, metadata = load_artifact(model_dir)
        self.labels = metadata["labels"]
        self.transform = eval_transform(metadata["input_size"], metadata["mean"], metadata["std"])

    @torch.inference_mode()
    def __call__(self, body: bytes) -> float:
        t0 = time.perf_counter()
        encoded, options = parse_body(body, "image/jpeg")
        images = [self.transform(decode_image(data)) for data in encoded]
        probabilities = torch.softmax(self.model(torch.stack(images)), 1).numpy()
        encode_response(probabilities, self.labels, options, "in-process")
        return time.perf_counter() - t0


class OrtInProcess:
    """This project's ONNX Runtime predictor in-process, with the server's thread count."""

    def __init__(self, model_dir: Path):
        self.predictor = Predictor(model_dir, read_metadata(model_dir), threads=os.cpu_count())

    def __call__(self, body: bytes) -> float:
        t0 = time.perf_counter()
        encoded, options = parse_body(body, "image/jpeg")
        probabilities = self.predictor.probabilities(list(encoded))
        encode_response(probabilities, self.predictor.labels, options, "in-process", self.predictor.variant)
        return time.perf_counter() - t0


# ---- servers ---------------------------------------------------------------------------------------------


class HttpServer:
    """A server process on a free 127.0.0.1 port, called over keep-alive connections."""

    ports: ClassVar[set[int]] = set()  # taken by any server of this run

    def __init__(self, name: str, work: Path):
        self.name = name
        self.port = free_port(self.ports)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"{name}.log"
        self.http = urllib3.PoolManager(maxsize=4)
        self.process: subprocess.Popen | None = None

    def start(self, command: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, path: str = "/ping") -> None:
        deadline = time.monotonic() + 180
        while True:
            try:
                if self.http.request("GET", self.url + path, timeout=2, retries=False).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"{self.name} did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.3)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> float:
        t0 = time.perf_counter()
        response = self.http.request("POST", self.url + path, body=body, retries=False, headers=headers)
        took = time.perf_counter() - t0
        if response.status != 200:
            raise SystemExit(f"{self.name}: request failed: {response.status} {response.data[:300]!r}")
        return took

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Mms(HttpServer):
    def __init__(self, name: str, store: Path, work: Path, pythonpath: Path | None = None):
        super().__init__(name, work)
        env = dict(
            os.environ,
            SAGEMAKER_BIND_TO_PORT=str(self.port),
            DOGBREED_BIND_HOST="127.0.0.1",
            DOGBREED_UNPACK_DIR=str(work / f"unpacked-{name}"),
            SAGEMAKER_MODEL_SERVER_WORKERS="1",
        )
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        self.start([sys.executable, "-m", "dogbreed", "serve", "--model-store", str(store)], env)

    def caller(self, target: str):
        headers = {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Target-Model": target}
        return lambda body: self.post("/invocations", body, headers)


class TorchServe(HttpServer):
    """TorchServe 0.12 from build/torchserve, one worker, serving ``model_dir`` with bench/torchserve_handler.py."""

    def __init__(self, model_dir: Path, work: Path):
        super().__init__("torchserve", work)
        if not (TORCHSERVE_HOME / "ts").is_dir():
            raise SystemExit(f"TorchServe is not in {TORCHSERVE_HOME}: make bench-serve installs it there")
        store = work / "torchserve-store"
        store.mkdir()
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(TORCHSERVE_HOME), str(REPO / "src")]),
            DOGBREED_INTRA_OP_THREADS=str(os.cpu_count()),
        )
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from model_archiver.model_packaging import generate_model_archive; generate_model_archive()",
                "--model-name",
                "resnet",
                "--version",
                "1.0",
                "--serialized-file",
                str(model_dir / "model.pth"),
                "--handler",
                str(REPO / "bench" / "torchserve_handler.py"),
                "--extra-files",
                str(model_dir / "metadata.json"),
                "--export-path",
                str(store),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        management, metrics = free_port(self.ports), free_port(self.ports)
        config = work / "torchserve.properties"
        config.write_text(
            f"inference_address=http://127.0.0.1:{self.port}\n"
            f"management_address=http://127.0.0.1:{management}\n"
            f"metrics_address=http://127.0.0.1:{metrics}\n"
            "default_workers_per_model=1\ndisable_system_metrics=true\n"
        )
        self.start(
            [
                sys.executable,
                "-c",
                "from ts.model_server import start; start()",
                "--start",
                "--foreground",
                "--ncs",
                "--disable-token-auth",
                "--model-store",
                str(store),
                "--models",
                "resnet=resnet.mar",
                "--ts-config",
                str(config),
            ],
            dict(env, TEMP=str(work)),
            cwd=work,
        )

    def caller(self):
        return lambda body: self.post("/predictions/resnet", body, {"Content-Type": "image/jpeg"})


# ---- the run ---------------------------------------------------------------------------------------------


def make_artifacts(work: Path, arch: str, image_size: int, bodies: list[bytes]) -> tuple[Path, Path, Path]:
    """Two artifacts of one random-init model, serving fp32 and int8, and a store holding both."""
    folders = sorted(p.name for p in (SAMPLE / "train").iterdir())
    model = build_model(arch, len(folders)).eval()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    batch = torch.from_numpy(np.stack([eval_array(open_rgb(b), image_size, mean, std) for b in bodies]))
    labels = torch.zeros(len(bodies), dtype=torch.long)
    dirs = {}
    for variant in ("fp32", "int8"):
        model_dir = dirs[variant] = work / f"artifact-{variant}"
        metadata = make_metadata(
            architecture=arch,
            class_folders=folders,
            input_size=image_size,
            mean=mean,
            std=std,
            metrics={},
            hyperparameters={},
        )
        metadata["onnx"] = write_onnx_variants(
            model,
            model_dir,
            image_size,
            parity_batches=[batch],
            test_loader=[(batch, labels)],
            calibration_batches=[batch] if variant == "int8" else None,
        )
        metadata["onnx"]["serve"] = variant  # speed only: random weights have no accuracy to gate on
        save_artifact(model_dir, model.state_dict(), metadata)
    store = work / "store"
    for variant, target in zip(("fp32", "int8"), TARGETS.values(), strict=True):
        pack_artifact(dirs[variant], store / target)
    pack_artifact(dirs["int8"], store / COLD_TARGET)
    return dirs["fp32"], dirs["int8"], store


def sequential(sides: dict, bodies: list[bytes], requests: int) -> dict[str, dict]:
    for body in bodies[:10]:
        for call in sides.values():
            call(body)
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(requests):
        body = bodies[i % len(bodies)]
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            latencies[name].append(sides[name](body))
    return {name: summary(values) for name, values in latencies.items()}


def concurrent(sides: dict, bodies: list[bytes], requests: int) -> dict[str, float]:
    """Requests/s with two clients at once, each side in alternating blocks of BLOCK requests."""
    done = {name: 0 for name in sides}
    elapsed = {name: 0.0 for name in sides}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, requests, BLOCK):
            for name, call in sides.items():
                t0 = time.perf_counter()
                list(pool.map(call, [bodies[(start + j) % len(bodies)] for j in range(BLOCK)]))
                elapsed[name] += time.perf_counter() - t0
                done[name] += BLOCK
    return {name: round(done[name] / elapsed[name], 2) for name in sides}


def run(opts, work: Path, servers: list[HttpServer]) -> dict:
    bodies = photos(20)
    fp32_dir, int8_dir, store = make_artifacts(work, opts.model, opts.image_size, bodies)
    mms = Mms("mms", store, work)
    servers.append(mms)
    extra: dict = {}
    if opts.torchserve:
        servers.append(TorchServe(fp32_dir, work))
    if opts.baseline_ref:
        servers.append(Mms(f"mms@{opts.baseline_ref}", store, work, baseline_source(opts.baseline_ref, work)))
    for server in servers:
        server.wait_ready()
    sides = {
        "torch_in_process": TorchEager(fp32_dir),
        "ort_in_process": OrtInProcess(fp32_dir),
        "ort_int8_in_process": OrtInProcess(int8_dir),
        **{name: mms.caller(target) for name, target in TARGETS.items()},
    }
    two_clients = {name: mms.caller(target) for name, target in TARGETS.items()}
    for server in servers[1:]:
        sides[server.name] = two_clients[server.name] = (
            server.caller(TARGETS["mms_fp32"]) if isinstance(server, Mms) else server.caller()
        )
    warm = statistics.median([mms.caller(TARGETS["mms_int8"])(bodies[i % 20]) for i in range(20)])
    cold = mms.caller(COLD_TARGET)(bodies[0])
    extra["cold_start_extra_ms"] = round((cold - warm) * 1000, 1)
    result = {
        "c1": sequential(sides, bodies, opts.requests),
        "c2_requests_per_s": concurrent(two_clients, bodies, opts.requests),
        **extra,
    }
    reference = result["c1"]["torch_in_process"]
    result["ratios"] = {
        "mms_fp32_p50_vs_torch_in_process": round(result["c1"]["mms_fp32"]["p50_ms"] / reference["p50_ms"], 3),
        "mms_int8_throughput_vs_torch_in_process": round(
            result["c1"]["mms_int8"]["requests_per_s"] / reference["requests_per_s"], 3
        ),
        "mms_int8_c2_throughput_vs_torch_in_process": round(
            result["c2_requests_per_s"]["mms_int8"] / reference["requests_per_s"], 3
        ),
        "mms_fp32_p50_vs_ort_in_process": round(
            result["c1"]["mms_fp32"]["p50_ms"] / result["c1"]["ort_in_process"]["p50_ms"], 3
        ),
    }
    if opts.torchserve:
        result["ratios"]["mms_fp32_c2_throughput_vs_torchserve"] = round(
            result["c2_requests_per_s"]["mms_fp32"] / result["c2_requests_per_s"]["torchserve"], 3
        )
    return result


def baseline_source(ref: str, work: Path) -> Path:
    """The project's src/ at git revision ``ref``."""
    dest = work / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "mobilenet_v2", "resnet50"])
    parser.add_argument("--torchserve", action="store_true", help="also serve the torch weights with TorchServe")
    parser.add_argument("--baseline-ref", help="also serve the project's code at this git revision")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    servers: list[HttpServer] = []
    try:
        result = run(opts, work, servers)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "model": opts.model,
                "image_size": opts.image_size,
                "batch": 1,
                "workers": 1,
                "cpus": os.cpu_count(),
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
