"""The built images carry nothing of the build host, and say which base they were built on."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.container.conftest import inspect

HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Run inside the image: every file the size of the host's CA bundle whose content is the same (the image's own
# bundle from its ca-certificates package aside, which is Debian's and may equal a plain host's), every pip
# configuration file, and every PIP_ variable in the environment.
FIND = r"""
import glob, hashlib, os, sys
size, digest = int(sys.argv[1]), sys.argv[2]
found = []
for top, dirs, files in os.walk("/"):
    if top in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(top, name)
        try:
            if os.path.islink(path) or os.path.getsize(path) != size:
                continue
            with open(path, "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() == digest and path != "/etc/ssl/certs/ca-certificates.crt":
                    found.append("host CA bundle: " + path)
        except OSError:
            pass
for pattern in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/root/.pip/pip.conf", "/root/.config/pip/pip.conf",
                "/home/*/.pip/pip.conf", "/home/*/.config/pip/pip.conf", "/usr/local/share/host-ca"):
    found += ["pip or CA settings: " + p for p in glob.glob(pattern)]
found += ["environment: " + k for k in os.environ if k.startswith("PIP_")]
print("\n".join(found))
"""


@pytest.mark.parametrize("kind", ["train", "serve"])
def test_the_images_hold_no_host_ca_bundle_or_pip_settings(images, kind):
    if not HOST_BUNDLE.is_file():
        pytest.skip("this host has no CA bundle at the usual place")
    data = HOST_BUNDLE.read_bytes()
    result = subprocess.run(
        ["docker", "run", "--rm", "--user", "0", "--entrypoint", "/opt/venv/bin/python", images[kind], "-c", FIND,
         str(len(data)), hashlib.sha256(data).hexdigest()],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", result.stdout


@pytest.mark.parametrize("kind", ["train", "serve"])
def test_the_images_name_their_base(images, kind):
    labels = json.loads(inspect(images[kind], "{{json .Config.Labels}}"))
    base = (Path(__file__).resolve().parents[2] / "build" / "base-image.ref").read_text().strip()
    assert labels["org.opencontainers.image.base.name"] == base
    # Pulled: its digest; a stand-in made by make base-image: says so, and that it is not the pinned image.
    stand_in = labels.get("dogbreed.base.stand-in", "")
    digest = labels.get("org.opencontainers.image.base.digest", "")
    assert digest.startswith("sha256:") or ("debootstrap" in stand_in and "not debian:" in stand_in), labels
