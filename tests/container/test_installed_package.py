"""Both images run the package installed into their venv, as pip installs it for a user: no source folder on
PYTHONPATH, the version pyproject.toml declares, and the commands the image needs."""

from __future__ import annotations

import json
import subprocess

import pytest

import dogbreed

PROBE = (
    "import importlib.metadata as m, json, os, dogbreed; "
    "print(json.dumps({'file': dogbreed.__file__, 'version': m.version('dogbreed'), "
    "'pythonpath': os.environ.get('PYTHONPATH'), "
    "'scripts': sorted(e.name for e in m.entry_points(group='console_scripts') if e.dist.name == 'dogbreed')}))"
)


@pytest.mark.parametrize("kind", ["train", "serve"])
def test_the_image_runs_the_installed_package(images, kind):
    result = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python3", images[kind], "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    installed = json.loads(result.stdout.strip().splitlines()[-1])
    assert installed["file"].startswith("/opt/venv/lib/") and "/site-packages/dogbreed/" in installed["file"]
    assert installed["version"] == dogbreed.__version__
    assert installed["pythonpath"] is None
    assert "dogbreed" in installed["scripts"]
