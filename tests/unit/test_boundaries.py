"""The boundary the serving image depends on: serving, and the explanations it makes inline, import no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# Everything the serving image's worker and launcher import, and the torch-free explanation code.
SERVING_MODULES = [
    "dogbreed.serving.server",
    "dogbreed.serving.handler_service",
    "dogbreed.serving.workflow",
    "dogbreed.serving.explanations",
    "dogbreed.explain.explainer",
    "dogbreed.explain.kernel_shap",
    "dogbreed.explain.superpixels",
    "dogbreed.preprocess",
    "dogbreed.artifact_format",
]


@pytest.mark.parametrize("module", SERVING_MODULES)
def test_serving_modules_import_no_torch(module):
    probe = f"import sys, {module}; print(sorted(m for m in ('torch', 'torchvision', 'smdebug') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"{module} imports {result.stdout.strip()}"


def test_the_probe_sees_torch_where_it_is_imported():
    """The check can fail: the training side imports torch."""
    probe = "import sys, dogbreed.models; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.stdout.strip() == "True", result.stderr[-2000:]
