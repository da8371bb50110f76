"""The boundary the serving image depends on: only dogbreed.training imports torch; serving, and the explanations
it makes inline, import none of it."""

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
    "dogbreed.artifact",
]
# The one place torch may be imported: training, with model construction, the torch artifact and transforms.
TORCH_PACKAGE = "dogbreed.training"


def torch_free_modules() -> list[str]:
    package = REPO_ROOT / "src" / "dogbreed"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if not name.startswith(TORCH_PACKAGE) and name != "dogbreed.__main__":
            names.append(name)
    return names


@pytest.mark.parametrize("module", SERVING_MODULES)
def test_serving_modules_import_no_torch(module):
    probe = f"import sys, {module}; print(sorted(m for m in ('torch', 'torchvision', 'smdebug') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"{module} imports {result.stdout.strip()}"


def test_only_the_training_package_imports_torch():
    """Every module outside dogbreed.training, imported one after another: the first after which torch is loaded
    is named."""
    modules = torch_free_modules()
    assert "dogbreed.cli" in modules and "dogbreed.workflows.cloud.cli" in modules
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'torch' in sys.modules:\n"
        "        print(name)\n"
        "        break\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"torch is imported once {result.stdout.strip()} is"


def test_the_probe_sees_torch_where_it_is_imported():
    """The check can fail: the training side imports torch."""
    probe = "import sys, dogbreed.training.models; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.stdout.strip() == "True", result.stderr[-2000:]
