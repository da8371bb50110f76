"""Start multi-model-server (MMS) with this project's handler: ``serve`` in the image, ``make serve`` natively.

Two modes, as SageMaker defines them:

- **routing** (default): one model, the model store itself, is registered at
  start-up; ``POST /invocations`` goes to it and the handler routes each
  request on ``X-Amzn-SageMaker-Target-Model``. No second server or HTTP hop
  sits in front of MMS. Nothing needs MMS's model-management API, so it
  listens only on a Unix socket in this server's private folder: the serving
  port answers ``/models`` with 404 and loads nothing.
- **multi-model** (``SAGEMAKER_MULTI_MODEL=true``): the SageMaker platform
  loads artifacts with ``POST /models`` on the serving port. This project's
  MMS guard (``src/mms-guard``) answers the whole ``/models`` API itself:
  only local folders inside the model store load, nothing is fetched, and
  every loaded model shares one Python worker (registered at start-up under
  :data:`SHARED_MODEL_NAME`) instead of costing a worker process each. The
  guard talks to that worker with a secret token made here at start-up.

Both modes know the container's memory (:mod:`dogbreed.serving.memory`): the
launcher reads the limit once, sizes the JVM's heap and direct buffers from
it, keeps a reserve, and hands the rest to the workers as their model budget.

Settings come from the sagemaker-inference environment variables:
``SAGEMAKER_BIND_TO_PORT`` (8080), ``SAGEMAKER_MODEL_SERVER_WORKERS``,
``SAGEMAKER_MODEL_SERVER_TIMEOUT`` (seconds, default 60),
``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (default 6) and ``SAGEMAKER_MODEL_SERVER_VMARGS``
(default: sized from the memory limit). ``DOGBREED_MEMORY_LIMIT_MB`` overrides the limit.
The model store is ``--model-store``, else ``DOGBREED_MODEL_STORE``, else
``/opt/ml/model`` when it holds one unpacked artifact (batch transform,
single-model endpoints, SageMaker local mode), else ``/opt/ml/models``, else
``/opt/ml/model`` (``SAGEMAKER_BASE_DIR`` moves ``/opt/ml``, ``SM_MODEL_DIR`` the
single model's folder). The listening address is ``DOGBREED_BIND_HOST`` (127.0.0.1;
the image sets 0.0.0.0).

SIGTERM and SIGINT stop MMS, its JVM and every worker, then this process exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from sagemaker_inference.environment import Environment

from dogbreed import sagemaker_env, settings
from dogbreed.artifact import METADATA_FILE
from dogbreed.errors import DogbreedError, run_cli
from dogbreed.health import wait_until_healthy
from dogbreed.serving import memory

HANDLER = "dogbreed.serving.handler_service:handle"
ROUTER_MODEL_NAME = "model"
# The MMS model whose workers every multi-model load shares; the guard hides it from the /models API.
SHARED_MODEL_NAME = "model"
DEFAULT_WORKERS = 1
DEFAULT_MAX_REQUEST_MB = 6
STOP_GRACE_SECONDS = 20


# A class of the guard's: its presence tells the guard folder is built.
GUARD_CLASS = Path("dogbreed/mms/GuardedManagementHandler.class")


class ServeError(DogbreedError):
    """The server cannot start as configured; the message says what to change."""


def default_model_store() -> Path:
    explicit = settings.text("DOGBREED_MODEL_STORE")
    if explicit:
        return Path(explicit)
    # A single model SageMaker unpacked (batch transform, single-model endpoints) comes first: the image
    # has an empty /opt/ml/models too.
    single = sagemaker_env.model_dir()
    if (single / METADATA_FILE).is_file():
        return single
    models = sagemaker_env.multi_model_dir()
    return models if models.is_dir() else single


def guard_dir() -> Path:
    """The compiled MMS guard, installed beside the Python environment (make venv, the image build)."""
    explicit = settings.text("DOGBREED_MMS_GUARD_DIR")
    return Path(explicit) if explicit else Path(sys.prefix) / "share" / "dogbreed" / "mms-guard"


def multi_model_enabled() -> bool:
    return settings.flag("SAGEMAKER_MULTI_MODEL")


def worker_count() -> int:
    """SAGEMAKER_MODEL_SERVER_WORKERS, the variable sagemaker-inference's Environment reads too."""
    return settings.positive_int("SAGEMAKER_MODEL_SERVER_WORKERS", DEFAULT_WORKERS)


class MemoryPlan(NamedTuple):
    """The memory reading at start-up, the JVM's sizes, the reserve, and the bytes left for models."""

    reading: memory.Reading
    jvm: memory.JvmSizes
    reserve: memory.Reserve
    models: int


def memory_plan(env: Environment) -> MemoryPlan:
    reading = memory.read_memory()
    jvm = memory.jvm_sizes(reading.limit, max_payload_bytes(env))
    reserve = memory.reserve_for(jvm, worker_count(), memory.max_decoded_pixels())
    models = reading.limit - reserve.total
    if models < 64 * memory.MiB:
        raise ServeError(
            f"a memory limit of {reading.limit // memory.MiB} MiB ({reading.source}) leaves {models // memory.MiB} MiB "
            f"for models beside the server's reserve of {reserve.total // memory.MiB} MiB; "
            "give the container more memory, or set fewer SAGEMAKER_MODEL_SERVER_WORKERS"
        )
    return MemoryPlan(reading, jvm, reserve, models)


def max_payload_bytes(env: Environment) -> int:
    return env.max_request_size or DEFAULT_MAX_REQUEST_MB * 1024 * 1024


def mms_properties(
    host: str, port: int, env: Environment, management_address: str, jvm: memory.JvmSizes
) -> dict[str, str]:
    # The guard's aggregator refuses a larger body with a JSON 413 before the JVM holds more of it.
    max_request = max_payload_bytes(env)
    return {
        "inference_address": f"http://{host}:{port}",
        "management_address": management_address,
        # As in sagemaker-inference: model URLs are absolute paths, resolved against "/". The guard
        # admits only folders inside the model store.
        "model_store": "/",
        "default_service_handler": HANDLER,
        "default_workers_per_model": str(worker_count()),
        # MMS 1.1.11 reads default_response_timeout in minutes; this is the seconds setting.
        "default_response_timeout_seconds": str(env.model_server_timeout),
        "max_request_size": str(max_request),
        "max_response_size": str(max_request),
        "decode_input_request": "false",
        "enable_envvars_config": "true",
        "async_logging": "true",
        "vmargs": settings.text("SAGEMAKER_MODEL_SERVER_VMARGS") or jvm.vmargs(),
    }


def mms_command(config_file: Path, startup_model: Path, name: str) -> list[str]:
    executable = Path(sys.executable).parent / "multi-model-server"
    command = [
        str(executable) if executable.exists() else shutil.which("multi-model-server") or "multi-model-server",
        "--start",
        "--foreground",
        "--mms-config",
        str(config_file),
        "--model-store",
        "/",
        "--log-config",
        str(resources.files("dogbreed.serving") / "log4j2.xml"),
        "--models",
        f"{name}={startup_model.resolve()}",
    ]
    return command


def find_manifest(folder: Path) -> Path | None:
    """A MANIFEST.json (any case) where MMS looks for one: the folder, MAR-INF/, or one level down.

    A manifest may name a handler, which MMS would import instead of this project's.
    """
    candidates = [folder, folder / "MAR-INF"]
    candidates += sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    for candidate in candidates:
        if candidate.is_dir():
            for entry in candidate.iterdir():
                if entry.name.lower() == "manifest.json":
                    return entry
    return None


def check_setup(model_store: Path, multi_model: bool) -> None:
    if not (guard_dir() / GUARD_CLASS).is_file():
        raise ServeError(
            f"the MMS guard is not built in {guard_dir()} (make venv builds it; "
            "DOGBREED_MMS_GUARD_DIR moves it); the server does not start without it"
        )
    if multi_model:
        if worker_count() > 1:
            raise ServeError(
                "multi-model mode shares one worker between all models; unset SAGEMAKER_MODEL_SERVER_WORKERS "
                "(ONNX Runtime uses every core in that worker)"
            )
        return
    if not model_store.is_dir():
        raise ServeError(f"model store {model_store} is not a directory (set --model-store or DOGBREED_MODEL_STORE)")
    manifest = find_manifest(model_store)
    if manifest is not None:
        raise ServeError(f"model store {model_store} holds an MMS manifest ({manifest}); remove it")


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the whole MMS process group (CLI, JVM, Python workers), SIGKILL what lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def get_args_parser(prog: str = "dogbreed serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve models with multi-model-server.")
    parser.add_argument("--model-store", type=Path, default=default_model_store())
    parser.add_argument(
        "--host",
        default=settings.text("DOGBREED_BIND_HOST", "127.0.0.1"),
        help="address to listen on (127.0.0.1; the image sets 0.0.0.0 through DOGBREED_BIND_HOST)",
    )
    parser.add_argument("--port", type=int, default=int(settings.text("SAGEMAKER_BIND_TO_PORT", "8080")))
    parser.add_argument("--pid-file", type=Path, help="write this process's pid here while it runs")
    parser.add_argument(
        "--stop", action="store_true", help="stop the server whose --pid-file is given (MMS and every worker)"
    )
    return parser


STOP_TIMEOUT_S = 30


def stop_server(pid_file: Path, timeout_s: float = STOP_TIMEOUT_S) -> str:
    """SIGTERM to the launcher named in ``pid_file``, which stops MMS and its workers; waits for it to end.

    A pid file the server left behind (killed, or the machine restarted) may name another process by now, so
    only a process running this package's server is signalled.
    """
    if not pid_file.is_file():
        return "no server started with this pid file is running"
    pid = int(pid_file.read_text().split()[0])
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    if "dogbreed" not in command or "serve" not in command:
        pid_file.unlink(missing_ok=True)
        return f"no server is running (process {pid} is gone or is not one); removed the stale pid file"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.25)
    return f"stopped server {pid}"


def write_config(
    args: argparse.Namespace, work_dir: Path, env: Environment, multi_model: bool, jvm: memory.JvmSizes
) -> Path:
    # Multi-model mode: the SageMaker platform calls POST /models on the serving port, and the guard answers it.
    # Routing mode: nothing needs the management API, so a Unix socket only this server's user can reach.
    management = f"http://{args.host}:{args.port}" if multi_model else f"unix:{work_dir / 'management.sock'}"
    properties = mms_properties(args.host, args.port, env, management, jvm)
    config_file = work_dir / "config.properties"
    config_file.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    return config_file


def child_environment(
    args: argparse.Namespace, work_dir: Path, env: Environment, plan: MemoryPlan, multi_model: bool
) -> dict[str, str]:
    child_env = dict(os.environ)
    # MMS keeps its pid file in the temp folder: one folder per server lets several run side by side.
    child_env.update(TMPDIR=str(work_dir), TEMP=str(work_dir))
    # Workers and ONNX Runtime's threads are sized together: each worker gets its share of the cores.
    child_env.setdefault("DOGBREED_INTRA_OP_THREADS", str(max(1, (os.cpu_count() or 1) // worker_count())))
    child_env["DOGBREED_MAX_PAYLOAD_BYTES"] = str(max_payload_bytes(env))
    child_env["DOGBREED_MODEL_ROOT"] = str(args.model_store.resolve())
    # Unpacked archives live with this server and go with it, unless a folder is set.
    child_env.setdefault("DOGBREED_UNPACK_DIR", str(work_dir / "unpacked"))
    # Each worker's share of the model budget, the limit, and the working memory of the requests in flight,
    # which a reading taken between requests does not show.
    child_env["DOGBREED_MODEL_MEMORY_BYTES"] = str(plan.models // worker_count())
    child_env["DOGBREED_MEMORY_LIMIT_BYTES"] = str(plan.reading.limit)
    child_env["DOGBREED_MEMORY_HEADROOM_BYTES"] = str(plan.reserve.requests)
    child_env["DOGBREED_QUEUED_BODY_BYTES"] = str(plan.jvm.queued)
    child_env["DOGBREED_SERVER_PID"] = str(os.getpid())
    child_env.pop("DOGBREED_CONTROL_TOKEN", None)
    if multi_model:
        child_env["DOGBREED_CONTROL_TOKEN"] = secrets.token_urlsafe(32)
        child_env["DOGBREED_SHARED_MODEL"] = SHARED_MODEL_NAME
    return child_env


def start_mms(
    args: argparse.Namespace, work_dir: Path, env: Environment, plan: MemoryPlan, multi_model: bool
) -> subprocess.Popen:
    config_file = write_config(args, work_dir, env, multi_model, plan.jvm)
    if multi_model:  # the shared worker's own folder: empty, private, nothing in it for MMS to import
        startup_model = work_dir / "shared"
        startup_model.mkdir()
        command = mms_command(config_file, startup_model, SHARED_MODEL_NAME)
    else:
        command = mms_command(config_file, args.model_store, ROUTER_MODEL_NAME)
    print(
        f"dogbreed serve: {'multi-model' if multi_model else 'routing'} mode, store {args.model_store}, "
        f"{worker_count()} worker(s), http://{args.host}:{args.port}",
        flush=True,
    )
    print(f"dogbreed serve: {memory.describe(plan.reading, plan.reserve, plan.models)}", flush=True)
    # MMS's classpath starts with ".": run from the guard folder, its classes come before model-server.jar's.
    return subprocess.Popen(
        command,
        env=child_environment(args, work_dir, env, plan, multi_model),
        cwd=guard_dir(),
        start_new_session=True,
    )


def run(argv: list[str] | None = None, prog: str = "dogbreed serve") -> int:
    parser = get_args_parser(prog)
    args = parser.parse_args(argv)
    if not args.stop:
        return serve(parser, args)
    if not args.pid_file:
        parser.error("--stop needs the --pid-file the server was started with")
    print(stop_server(args.pid_file))
    return 0


def serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Start MMS as ``args`` say, and run until a stop signal or MMS's own end; returns the exit code."""
    if not 0 < args.port < 32768:  # MMS reads the port as a Java short
        parser.error(f"port {args.port} is out of range 1..32767")

    multi_model = multi_model_enabled()
    env = Environment()
    plan: list[MemoryPlan] = []

    def prepare() -> None:
        check_setup(args.model_store, multi_model)
        plan.append(memory_plan(env))

    if run_cli(parser.prog, prepare):
        return 2  # a setup MMS cannot start with: a usage error
    args.model_store.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="dogbreed-mms-"))  # mode 0700: the management socket lives here
    process = start_mms(args, work_dir, env, plan[0], multi_model)
    if args.pid_file:
        args.pid_file.parent.mkdir(parents=True, exist_ok=True)
        args.pid_file.write_text(f"{os.getpid()}\n")

    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        ping = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '') else args.host}:{args.port}/ping"
        if wait_until_healthy(ping, env.startup_timeout, lambda: process.poll() is None) and stopping["signal"] is None:
            print(f"dogbreed serve: ready at {ping}", flush=True)
        while process.poll() is None and stopping["signal"] is None:
            time.sleep(0.2)
    finally:
        stop_group(process)
        shutil.rmtree(work_dir, ignore_errors=True)
        if args.pid_file:
            args.pid_file.unlink(missing_ok=True)
    return 0 if stopping["signal"] is not None else (process.returncode or 1)
