"""The workflows' own venv (.venv-cloud, pip install .[cloud]), as make creates it: SDK v3, no torch, no smdebug,
and no import that warns about deprecation."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

CLOUD_PYTHON = REPO_ROOT / ".venv-cloud" / "bin" / "python"


def cloud_python(*args: str) -> subprocess.CompletedProcess:
    assert CLOUD_PYTHON.exists(), "no .venv-cloud: make test creates it (make cloud-venv)"
    return subprocess.run(
        [str(CLOUD_PYTHON), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )


PROBE = """
import importlib, importlib.metadata, json, pkgutil, warnings
warnings.simplefilter("error")
import dogbreed.workflows
from dogbreed.workflows import sdk
names = sorted(m.name for m in pkgutil.walk_packages(dogbreed.workflows.__path__, "dogbreed.workflows."))
for name in names:
    importlib.import_module(name)
sdk.trainer_module(); sdk.tuner_module()
import sagemaker.core.clarify, sagemaker.core.debugger, sagemaker.core.local.local_session
def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
print(json.dumps({"modules": names, **{n: version(n) for n in ("sagemaker", "torch", "smdebug", "protobuf")}}))
"""


def test_the_workflows_venv_has_sdk_v3_without_torch_and_imports_every_workflow_without_a_warning():
    result = cloud_python("-c", PROBE)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    assert found["sagemaker"].startswith("3.") and found["protobuf"].startswith("6.")
    assert found["torch"] is None and found["smdebug"] is None
    assert {"dogbreed.workflows.local", "dogbreed.workflows.sdk", "dogbreed.workflows.cloud.training"} <= set(
        found["modules"]
    )


@pytest.mark.parametrize("command", ["cloud", "local"])
def test_the_workflow_commands_start_there_with_warnings_as_errors(command):
    result = cloud_python("-W", "error", "-m", "dogbreed", command, "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"usage: dogbreed {command}" in result.stdout and result.stderr == ""


def test_a_command_whose_extra_is_missing_says_which_in_one_line():
    result = cloud_python("-m", "dogbreed", "train", "--epochs", "1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("dogbreed train: error: this command needs the train extra (no module torch here)")
