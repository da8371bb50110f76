"""make system's refusals, in a container of the base image: no root, or not Debian or Ubuntu."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO_ROOT


def run_in(base_image: str, *args: str, user: str = "0", setup: str = "") -> subprocess.CompletedProcess:
    script = f"{setup} bash /repo/scripts/system.sh {' '.join(args)}"
    return subprocess.run(
        ["docker", "run", "--rm", "--user", user, "-v", f"{REPO_ROOT / 'scripts'}:/repo/scripts:ro", base_image,
         "bash", "-c", script],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_without_root_or_sudo_it_names_the_command_in_one_line(base_image):
    result = run_in(base_image, "java", user="1000")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "system: needs openjdk-17-jdk-headless: MMS's front end runs on Java 17, and javac compiles its guard"
    ]
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "run: sudo sh -c 'apt-get update" in error[0] and "openjdk-17-jdk-headless" in error[0]


def test_on_another_system_it_names_what_to_install(base_image):
    result = run_in(base_image, "java", setup="echo ID=fedora > /etc/os-release &&")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "system: error: not Debian or Ubuntu; install openjdk-17-jdk-headless (or their equivalents) yourself"
    )


def test_with_nothing_missing_it_says_nothing(base_image):
    # No python3.11 in the bare base: make venv names the interpreter itself, so there is nothing to install.
    result = run_in(base_image, "python")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
