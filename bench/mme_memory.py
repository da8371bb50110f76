"""Multi-model memory: models resident per GiB under one ``docker run --memory`` limit, in one run.

Two designs of the serving image, on the same artifacts under the same limit:

- ``shared``: this checkout's image (``--image``): every loaded model shares
  one Python worker, and a load that does not fit the budget is 507;
- ``per_process``: the image built from git revision ``--baseline-ref``
  (default: the last commit before shared workers), where MMS starts one
  Python worker per loaded model.

For each model (random-init ResNet18 and MobileNetV2 at 224 px, serving their
int8 graphs, calibrated on sample photos), each round starts a fresh
container of each design, in an order that alternates round by round, and
loads the same model folder under new names (``POST /models``) until the
first answer that is not 200, or until the connection or the container dies.
Each load is timed, and so is the first invoke of the model just loaded.
Afterwards every loaded model is invoked once more, and the container is
inspected: running, ``OOMKilled``, and the ``Worker died`` lines in its log.

    python bench/mme_memory.py --image dogbreed-serve:TAG [--limit 768m 2g] [--rounds 2] [--baseline-ref REF]

Prints one JSON object; the README's "Memory" section quotes a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_latency import free_port, make_artifacts, percentile, photos

REPO = Path(__file__).resolve().parent.parent
BASELINE_REF = "0f2dbb9"
MAX_LOADS = 400


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, body); status 0 when the connection failed (the server or its container died)."""
    call = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(call, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout.strip()


def build_baseline(ref: str) -> str:
    """The serving image at git revision ``ref``, built from that revision's tree alone."""
    tag = f"dogbreed-serve:bench-{ref}"
    base = (REPO / "build" / "base-image.ref").read_text().strip()
    context = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(
        ["docker", "build", "--network=host", "-q", "-f", "docker/serve.Dockerfile", "--build-arg",
         f"BASE_IMAGE={base}", "-t", tag, "-"],
        input=context, check=True, capture_output=True,
    )  # fmt: skip
    return tag


def container_working_set(name: str) -> float | None:
    """MiB in use in the container's cgroup, less the inactive file cache (v1 or v2); None if it cannot be read."""
    script = (
        "cat /sys/fs/cgroup/memory/memory.usage_in_bytes /sys/fs/cgroup/memory.current 2>/dev/null; "
        "grep -h inactive_file /sys/fs/cgroup/memory/memory.stat /sys/fs/cgroup/memory.stat 2>/dev/null"
    )
    lines = docker("exec", name, "sh", "-c", script, check=False).splitlines()
    if not lines or not lines[0].isdigit():
        return None
    inactive = {k: int(v) for k, v in (line.split() for line in lines[1:] if len(line.split()) == 2)}
    return (int(lines[0]) - inactive.get("total_inactive_file", inactive.get("inactive_file", 0))) / 2**20


def one_round(image: str, store: Path, limit: str, body: bytes) -> dict:
    name, port = f"bench-mme-{os.getpid()}-{time.monotonic_ns()}", free_port(set())
    docker(
        "run", "-d", "--name", name, "--memory", limit, "--memory-swap", limit, "-p", f"127.0.0.1:{port}:8080",
        "-e", "SAGEMAKER_MULTI_MODEL=true", "-v", f"{store}:/opt/ml/models:ro", image, "serve",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while request(port, "GET", "/ping")[0] != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"{image} did not start:\n{docker('logs', name, check=False)[-3000:]}")
            time.sleep(0.5)
        loads, invokes, loaded, refusal = [], [], [], None
        image_headers = {"Content-Type": "image/jpeg"}
        for i in range(MAX_LOADS):
            payload = json.dumps({"model_name": f"m{i}", "url": "/opt/ml/models/m/model"}).encode()
            t0 = time.perf_counter()
            status, answer = request(port, "POST", "/models", payload, {"Content-Type": "application/json"})
            took = time.perf_counter() - t0
            if status != 200:
                refusal = {"status": status, "body": answer[:200].decode(errors="replace")}
                break
            loads.append(took)
            loaded.append(f"m{i}")
            t0 = time.perf_counter()
            status, _ = request(port, "POST", f"/models/m{i}/invoke", body, image_headers)
            invokes.append(time.perf_counter() - t0)
            if status != 200:
                refusal = {"status": status, "body": f"the first invoke of m{i} failed"}
                break
        answering = sum(request(port, "POST", f"/models/{m}/invoke", body, image_headers)[0] == 200 for m in loaded)
        state = json.loads(docker("inspect", "--format", "{{json .State}}", name))
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        working_set = container_working_set(name) if state["Running"] else None
        return {
            "models": len(loaded),
            "answering_after": answering,
            "refusal": refusal,
            "running": state["Running"],
            "oom_killed": state["OOMKilled"],
            "worker_deaths": (logs.stdout + logs.stderr).count("Worker died"),
            "working_set_mib": working_set,
            "load_s": loads,
            "first_invoke_s": invokes,
        }
    finally:
        docker("rm", "-f", name, check=False)


def summarize(rounds: list[dict], limit_gib: float) -> dict:
    loads = [t for r in rounds for t in r["load_s"]]
    invokes = [t for r in rounds for t in r["first_invoke_s"]]
    models = sorted(r["models"] for r in rounds)
    return {
        "models": models,
        "models_per_gib": round(models[len(models) // 2] / limit_gib, 1),
        "load_p50_ms": round(percentile(loads, 50) * 1000, 1) if loads else None,
        "load_p99_ms": round(percentile(loads, 99) * 1000, 1) if loads else None,
        "first_invoke_p50_ms": round(percentile(invokes, 50) * 1000, 1) if invokes else None,
        "first_invoke_p99_ms": round(percentile(invokes, 99) * 1000, 1) if invokes else None,
        "refusals": [r["refusal"] for r in rounds],
        "all_loaded_answer": all(r["answering_after"] == r["models"] for r in rounds),
        "container_deaths": sum((not r["running"]) or r["oom_killed"] for r in rounds),
        "worker_deaths": sum(r["worker_deaths"] for r in rounds),
        "working_set_mib": [r["working_set_mib"] and round(r["working_set_mib"]) for r in rounds],
    }


def measure(designs: dict[str, str], store: Path, limit: str, rounds: int, body: bytes, label: str) -> dict:
    """Both designs at one limit, alternating which goes first round by round."""
    runs: dict[str, list[dict]] = {d: [] for d in designs}
    for index in range(rounds):
        for design in list(designs) if index % 2 == 0 else list(reversed(designs)):
            runs[design].append(one_round(designs[design], store, limit, body))
            print(f"{label} round {index} {design}: {runs[design][-1]['models']} models", file=sys.stderr)
    summary: dict = {d: summarize(r, parse_limit(limit)) for d, r in runs.items()}
    summary["density_ratio"] = round(
        summary["shared"]["models_per_gib"] / max(summary["per_process"]["models_per_gib"], 0.1), 2
    )
    return summary


def parse_limit(limit: str) -> float:
    units = {"m": 1 / 1024, "g": 1.0}
    return float(limit[:-1]) * units[limit[-1].lower()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", nargs="+", default=["768m", "2g"], help="docker run --memory values to measure at")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image", required=True, help="this checkout's serving image")
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    opts = parser.parse_args()

    baseline = build_baseline(opts.baseline_ref)
    designs = {"shared": opts.image, "per_process": baseline}
    bodies = photos(8)
    work = Path(tempfile.mkdtemp(prefix="bench-mme-"))
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "limits": opts.limit,
        "images": designs,
        "results": {},
    }
    try:
        for arch in opts.models:
            _, int8_dir, _ = make_artifacts(work / arch, arch, 224, bodies)
            store = work / arch / "mme"
            folder = store / "m" / "model"
            folder.mkdir(parents=True)
            for item in ("metadata.json", "model.int8.onnx"):
                shutil.copy(int8_dir / item, folder / item)
            for path in [work, *work.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            result["results"][arch] = {
                limit: measure(designs, store, limit, opts.rounds, bodies[0], f"{arch} {limit}") for limit in opts.limit
            }
            result["results"][arch]["graph_mb"] = round((folder / "model.int8.onnx").stat().st_size / 1e6, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
