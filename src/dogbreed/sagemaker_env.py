"""The SageMaker training contract, in one place.

SageMaker describes a job through ``SM_*`` environment variables and the
``/opt/ml`` tree. Everything here reads the environment when called, never at
import time, and every path can be moved: ``SAGEMAKER_BASE_DIR`` relocates the
whole ``/opt/ml`` tree (the same variable the sagemaker-training toolkit
honours), and the specific ``SM_*`` variables override single paths. That is
what lets the same code run natively, in local mode and in a real job.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dogbreed import settings

log = logging.getLogger(__name__)

DEFAULT_BASE_DIR = "/opt/ml"

# Exit codes of the training entry points.
EXIT_OK = 0
EXIT_FAILURE = 1  # data, weights, checkpoint or runtime error
EXIT_USAGE = 2  # bad hyperparameters (argparse's convention)
EXIT_INTERRUPTED = 143  # 128 + SIGTERM: stopped, checkpoint kept for resume

# The hyperparameter the SDK's torch_distributed distribution sets: run the script under torchrun.
TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"


def base_dir() -> Path:
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE_DIR))


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


def model_dir() -> Path:
    """Where the model artifact goes; SageMaker uploads it as model.tar.gz."""
    return _env_path("SM_MODEL_DIR", base_dir() / "model")


def multi_model_dir() -> Path:
    """Where a SageMaker multi-model endpoint puts the models it loads (``/opt/ml/models``)."""
    return base_dir() / "models"


def output_dir() -> Path:
    return _env_path("SM_OUTPUT_DIR", base_dir() / "output")


def output_data_dir() -> Path:
    """Extra outputs (metrics, plots); SageMaker uploads them as output.tar.gz."""
    return _env_path("SM_OUTPUT_DATA_DIR", output_dir() / "data")


def default_tensor_dir() -> Path:
    """Where the smdebug hook writes when not told: SageMaker's place in a job, else the output data folder.

    The toolkit sets ``SM_TRAINING_ENV`` in every SageMaker job, local mode included.
    """
    if os.environ.get("SM_TRAINING_ENV"):
        return output_dir() / "tensors"
    return output_data_dir() / "tensors"


def checkpoint_dir() -> Path:
    """SageMaker syncs this folder with the job's S3 checkpoint location."""
    return _env_path("SM_CHECKPOINT_DIR", base_dir() / "checkpoints")


def input_config_dir() -> Path:
    return _env_path("SM_INPUT_CONFIG_DIR", base_dir() / "input" / "config")


def channel_dir(name: str) -> Path | None:
    """The local folder of input channel ``name``, when SageMaker defines it."""
    value = os.environ.get(f"SM_CHANNEL_{name.upper()}")
    return Path(value) if value else None


def debug_hook_config_file() -> Path | None:
    """SageMaker Debugger's hook configuration, when the job has one.

    Real jobs with a Debugger config get ``debughookconfig.json`` in the input
    config folder; ``SMDEBUG_CONFIG_FILE_PATH`` points elsewhere. Local mode
    writes no such file.
    """
    explicit = os.environ.get("SMDEBUG_CONFIG_FILE_PATH")
    candidate = Path(explicit) if explicit else input_config_dir() / "debughookconfig.json"
    return candidate if candidate.is_file() else None


def is_sagemaker_layout() -> bool:
    """Whether this process runs with a SageMaker-style output tree.

    True inside a training container (``/opt/ml`` exists) or when the tree has
    been moved explicitly. A plain native run without either writes no
    failure file, so it never creates ``/opt/ml`` on a workstation.
    """
    return any(os.environ.get(v) for v in ("SAGEMAKER_BASE_DIR", "SM_OUTPUT_DIR")) or Path(DEFAULT_BASE_DIR).is_dir()


def failure_file() -> Path:
    return output_dir() / "failure"


def write_failure(reason: str, first_only: bool = False) -> Path | None:
    """Record why the job failed, where SageMaker shows it as FailureReason.

    ``first_only``: keep a reason already written. The processes of a torchrun job share the file, and the
    rank that failed first names the cause; the others fail after it, on the connection it closed.

    Returns the path, or None when there is no SageMaker layout or it cannot be written (the reason is still
    logged by the caller).
    """
    if not is_sagemaker_layout():
        return None
    path = failure_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x" if first_only else "w", encoding="utf-8") as file:
            file.write(reason.rstrip() + "\n")
    except FileExistsError:
        return path
    except OSError as exc:
        log.warning("could not write failure file %s: %s", path, exc)
        return None
    return path


def clear_failure() -> bool:
    """Remove the failure file an earlier run left in this output tree (a stopped job run again in place).

    SageMaker gives every job a fresh output folder; natively the tree is reused, and a job that resumes and
    succeeds must not still read as failed. Returns whether there was one.
    """
    if not is_sagemaker_layout():
        return False
    try:
        failure_file().unlink()
    except FileNotFoundError:
        return False
    return True


def num_cpus() -> int:
    return settings.positive_int("SM_NUM_CPUS", os.cpu_count() or 1)
