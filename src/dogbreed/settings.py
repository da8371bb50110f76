"""Settings read from environment variables, when called and never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import overload


@overload
def positive_int(name: str, default: int) -> int: ...
@overload
def positive_int(name: str, default: None = None) -> int | None: ...


def positive_int(name: str, default: int | None = None) -> int | None:
    """The variable ``name`` as a positive integer; ``default`` when it is unset, empty or anything else."""
    return _int_at_least(name, 1, default)


@overload
def natural_int(name: str, default: int) -> int: ...
@overload
def natural_int(name: str, default: None = None) -> int | None: ...


def natural_int(name: str, default: int | None = None) -> int | None:
    """The variable ``name`` as an integer of 0 or more; ``default`` when it is unset, empty or anything else."""
    return _int_at_least(name, 0, default)


def _int_at_least(name: str, minimum: int, default: int | None) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() and int(value) >= minimum else default


TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off"})


def parse_bool(value: object) -> bool | None:
    """``value`` as a boolean, from a bool or the words above (any case); None when it is neither."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def flag(name: str) -> bool:
    """Whether the variable ``name`` is set to a true word; unset, empty or anything else is False."""
    return parse_bool(os.environ.get(name, "")) is True


@overload
def text(name: str, default: str) -> str: ...
@overload
def text(name: str, default: None = None) -> str | None: ...


def text(name: str, default: str | None = None) -> str | None:
    """The variable ``name`` as a string; ``default`` when it is unset or empty."""
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Setting:
    """One environment variable the package reads: the reference's table is generated from these."""

    name: str
    default: str
    meaning: str
    section: str


# Sections of the reference, in its order. "launcher" variables are set by the server for its workers and the
# MMS guard: documented so that nobody wonders what they are, not for users to set.
SECTIONS = {
    "serving": "Serving",
    "limits": "Serving limits",
    "explanations": "Inline explanations",
    "cloud": "Cloud workflows",
    "training": "Training (set by torchrun and the job)",
    "launcher": "Set by the server's launcher for its workers (not for users)",
}

_SERVING = (
    Setting(
        "SAGEMAKER_BIND_TO_PORT",
        "8080",
        "the serving port (MMS accepts at most 32767); management shares it only in multi-model mode",
        "serving",
    ),
    Setting("DOGBREED_BIND_HOST", "`127.0.0.1`", "listen address; the serving image sets `0.0.0.0`", "serving"),
    Setting(
        "SAGEMAKER_MODEL_SERVER_WORKERS",
        "1",
        "workers (routing mode; multi-model mode runs one); ONNX Runtime threads per worker = cores / workers",
        "serving",
    ),
    Setting(
        "SAGEMAKER_MODEL_SERVER_TIMEOUT",
        "60",
        "response timeout, seconds (MMS's `default_response_timeout_seconds`); it also bounds a worker's start",
        "serving",
    ),
    Setting(
        "SAGEMAKER_MODEL_SERVER_VMARGS", "heap and direct buffers sized from the memory limit", "JVM options", "serving"
    ),
    Setting(
        "SAGEMAKER_MULTI_MODEL",
        "`false`",
        "multi-model mode: nothing loads at start-up; SageMaker loads and unloads through the management API",
        "serving",
    ),
    Setting(
        "DOGBREED_MODEL_STORE",
        "`/opt/ml/model` when it holds one model, else `/opt/ml/models`",
        "the model store (the server's `--model-store` wins)",
        "serving",
    ),
    Setting(
        "DOGBREED_MEMORY_LIMIT_MB",
        "the cgroup's limit, else the host's memory",
        "the memory the server may use; the model budget is this less the reserve",
        "serving",
    ),
    Setting(
        "DOGBREED_MAX_LOADED_MODELS",
        "none",
        "an extra bound on loaded models per worker by count; memory bounds them anyway",
        "serving",
    ),
    Setting("DOGBREED_INTRA_OP_THREADS", "cores / workers", "ONNX Runtime threads per worker", "serving"),
    Setting(
        "DOGBREED_ORT_SPIN",
        "`0`",
        "`1`: ONNX Runtime's threads spin between requests instead of sleeping (lower latency where cores are spare)",
        "serving",
    ),
    Setting(
        "DOGBREED_UNPACK_DIR", "a folder in the server's temporary folder", "where archives are unpacked", "serving"
    ),
    Setting(
        "DOGBREED_MMS_GUARD_DIR",
        "`PREFIX/share/dogbreed/mms-guard` of the Python environment",
        "the compiled MMS guard",
        "serving",
    ),
    Setting(
        "DOGBREED_ACCESS_LOG",
        "`warn`",
        "`info` logs every request (costs the JVM time per request); read by the server's log4j2 configuration",
        "serving",
    ),
    Setting(
        "SAGEMAKER_MAX_PAYLOAD_IN_MB",
        "6",
        "largest request body; the JVM holds at most four of them at once (507 past it)",
        "limits",
    ),
    Setting(
        "DOGBREED_MAX_DECODED_PIXELS",
        "8000000",
        "pixels one image may decode to in a worker, after JPEG scaling; the request reserve grows with it"
        " (12 bytes a pixel)",
        "limits",
    ),
    Setting(
        "DOGBREED_MAX_REQUEST_PIXELS",
        "100000000",
        "pixels of all images in one request, from their headers before any is decoded",
        "limits",
    ),
    Setting("DOGBREED_MAX_ARCHIVE_MEMBERS", "64", "members of one model archive", "limits"),
    Setting("DOGBREED_MAX_MEMBER_MB", "1024", "one archive member's size", "limits"),
    Setting("DOGBREED_MAX_UNPACKED_MB", "2048", "an archive's unpacked size", "limits"),
    Setting(
        "DOGBREED_UNPACK_CACHE_MB",
        "4096",
        "the unpack folder's size; the least recently used folder no worker is loading goes first",
        "limits",
    ),
    Setting("DOGBREED_UNPACK_CACHE_ENTRIES", "16", "models in the unpack folder", "limits"),
    Setting(
        "DOGBREED_EXPLAIN_MAX_EVALUATIONS",
        "1024",
        "model evaluations one request's explanations may take (`images x (explain_samples + 2)`);"
        " more is 413 `TooManyEvaluations`",
        "explanations",
    ),
    Setting(
        "DOGBREED_EXPLAIN_TIME_LIMIT_MS",
        "10000",
        "time one request's explanations may take; past it the fit uses what was evaluated"
        ' and says `"complete": false`',
        "explanations",
    ),
)
_CLOUD = (
    Setting(
        "SAGEMAKER_ROLE",
        "none",
        "execution role ARN (`--role`); required to create jobs, models and endpoints",
        "cloud",
    ),
    Setting("SAGEMAKER_BUCKET", "`sagemaker-REGION-ACCOUNT`", "S3 bucket (`--bucket`)", "cloud"),
    Setting("SAGEMAKER_PREFIX", "`dogbreed`", "S3 key prefix (`--prefix`)", "cloud"),
    Setting("SAGEMAKER_ENDPOINT", "`dogbreed`", "endpoint name (`--endpoint`)", "cloud"),
    Setting(
        "SAGEMAKER_DATA", "none", "training channel: `s3://...`, or a local folder synced to S3 (`--data`)", "cloud"
    ),
    Setting("SAGEMAKER_SPOT", "`false`", "managed spot training (`--spot`)", "cloud"),
    Setting("AWS_REGION", "`AWS_DEFAULT_REGION`, then the AWS configuration", "the region of every AWS call", "cloud"),
    Setting("TAG", "`latest`", "the pushed images' tag (`--tag`; make passes the commit's)", "cloud"),
    Setting("TRAIN_IMAGE", "`dogbreed-train`", "the training image's repository (`--train-repository`)", "cloud"),
    Setting("SERVE_IMAGE", "`dogbreed-serve`", "the serving image's repository (`--serve-repository`)", "cloud"),
    Setting(
        "TRAIN_IMAGE_URI", "ECR's `REGISTRY/TRAIN_IMAGE:TAG`", "a full training image URI (`--train-image`)", "cloud"
    ),
    Setting(
        "SERVE_IMAGE_URI", "ECR's `REGISTRY/SERVE_IMAGE:TAG`", "a full serving image URI (`--serve-image`)", "cloud"
    ),
    Setting("TRAIN_INSTANCE_TYPE", "`ml.g4dn.xlarge`", "training and tuning instances", "cloud"),
    Setting("SERVE_INSTANCE_TYPE", "`ml.m5.large`", "endpoint instances", "cloud"),
    Setting("TRANSFORM_INSTANCE_TYPE", "`ml.m5.large`", "batch transform instances", "cloud"),
    Setting("TRANSFORM_INSTANCES", "1", "batch transform instance count", "cloud"),
    Setting("CLARIFY_INSTANCE_TYPE", "`ml.m5.xlarge`", "the Clarify processing job's instance", "cloud"),
    Setting("AWS_DEFAULT_REGION", "the AWS configuration's", "the region, where `AWS_REGION` is unset", "cloud"),
    Setting(
        "AWS_ACCESS_KEY_ID",
        "the AWS configuration's",
        "with `AWS_PROFILE` unset too, local mode sets inert placeholders: it calls nothing with them",
        "cloud",
    ),
    Setting("AWS_PROFILE", "the AWS configuration's", "the AWS profile", "cloud"),
    Setting("REGISTRY", "ECR of the account and region", "where `push` sends the images (`--registry`)", "cloud"),
)
_TRAINING = (
    Setting("WORLD_SIZE", "1", "processes in a data-parallel job", "training"),
    Setting("RANK", "0", "this process's place among them", "training"),
    Setting("LOCAL_RANK", "0", "its place on this machine (the GPU it uses)", "training"),
    Setting("SM_NUM_CPUS", "the machine's cores", "cores the job may use (the toolkit sets it)", "training"),
    Setting("SMDEBUG_LOG_LEVEL", "`warning`", "smdebug's log level (set by training when unset)", "training"),
)
_LAUNCHER = (
    Setting("DOGBREED_MODEL_ROOT", "the model store", "the folder target paths resolve in", "launcher"),
    Setting(
        "DOGBREED_MAX_PAYLOAD_BYTES",
        "from `SAGEMAKER_MAX_PAYLOAD_IN_MB`",
        "the body limit, for the workers' own check",
        "launcher",
    ),
    Setting(
        "DOGBREED_MODEL_MEMORY_BYTES",
        "the model budget / workers",
        "one worker's share of the model budget",
        "launcher",
    ),
    Setting("DOGBREED_MEMORY_LIMIT_BYTES", "the memory limit", "the limit the workers admit against", "launcher"),
    Setting("DOGBREED_MEMORY_HEADROOM_BYTES", "the request reserve", "memory kept free for requests", "launcher"),
    Setting(
        "DOGBREED_QUEUED_BODY_BYTES",
        "four request bodies",
        "request bytes the MMS guard lets wait for a worker",
        "launcher",
    ),
    Setting("DOGBREED_SERVER_PID", "the worker's own", "the process whose tree the memory reading sums", "launcher"),
    Setting(
        "DOGBREED_CONTROL_TOKEN",
        "a new random token per start",
        "the shared secret of multi-model mode's management calls from the handler",
        "launcher",
    ),
    Setting(
        "DOGBREED_SHARED_MODEL",
        "multi-model mode only",
        "the MMS model whose workers hold every loaded target",
        "launcher",
    ),
)
SETTINGS: dict[str, Setting] = {s.name: s for s in (*_SERVING, *_CLOUD, *_TRAINING, *_LAUNCHER)}
