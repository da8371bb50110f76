"""The package's declaration in pyproject.toml agrees with the pinned requirements and with the code."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

import dogbreed

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
# make venv and both images install these from the constraints before the requirements files.
INSTALLED_FIRST = {"pip", "setuptools"}


def normalized(requirement: str) -> str:
    """The project name of a requirement line or specifier, as PyPI compares names."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def requirement_lines(path: Path) -> list[str]:
    """The package lines of a requirements file, following ``-r`` includes."""
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            lines += requirement_lines(path.parent / line[3:].strip())
        elif line:
            lines.append(line)
    return lines


def pinned(path: Path) -> dict[str, str]:
    pins = {}
    for line in requirement_lines(path):
        name, sep, version = line.partition("==")
        assert sep, f"{path.name}: {line!r} is not pinned with =="
        pins[normalized(name)] = version.strip()
    return pins


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared(project: dict, extra: str) -> set[str]:
    """The names an extra brings, the core dependencies and the extras it includes counted in."""
    names = {normalized(r) for r in project["dependencies"]}
    for requirement in project["optional-dependencies"][extra]:
        included = re.fullmatch(r"dogbreed\[([a-z,]+)\]", requirement)
        if included:
            for other in included.group(1).split(","):
                names |= declared(project, other)
        else:
            names.add(normalized(requirement))
    return names


@pytest.mark.parametrize("extra", ["train", "serve", "cloud", "dev"])
def test_each_extra_names_the_packages_its_requirements_file_pins(project, extra):
    assert declared(project, extra) - INSTALLED_FIRST == set(pinned(REQUIREMENTS / f"{extra}.txt"))


@pytest.mark.parametrize(
    "extra, constraints_file",
    [
        ("train", "constraints.txt"),
        ("serve", "constraints.txt"),
        ("dev", "constraints.txt"),
        ("cloud", "cloud-constraints.txt"),
    ],
)
def test_requirements_pin_the_versions_of_the_constraints(extra, constraints_file):
    constraints = pinned(REQUIREMENTS / constraints_file)
    for name, version in pinned(REQUIREMENTS / f"{extra}.txt").items():
        assert constraints.get(name) == version, f"{extra}.txt pins {name}=={version}, {constraints_file} does not"
    assert set(constraints) >= INSTALLED_FIRST


def test_the_workflows_venv_holds_neither_torch_nor_smdebug():
    """The cloud extra installs beside a user's own SDK v3: nothing of the training side comes with it."""
    cloud = pinned(REQUIREMENTS / "cloud-constraints.txt")
    assert not {"torch", "torchvision", "smdebug", "sagemaker-training", "multi-model-server"} & set(cloud)
    assert cloud["sagemaker"].startswith("3.")


def test_the_version_has_one_source():
    assert importlib.metadata.version("dogbreed") == dogbreed.__version__
    assert "version" not in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_console_script_loads_a_command_of_this_package(project):
    scripts = {
        e.name: e
        for e in importlib.metadata.entry_points(group="console_scripts")
        if e.dist is not None and e.dist.name == "dogbreed"
    }
    assert set(scripts) == set(project["scripts"])
    for name, entry in scripts.items():
        assert callable(entry.load()), name


def test_both_dockerfiles_start_from_the_same_base_pinned_by_digest():
    bases = {
        re.search(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / "docker" / name).read_text(), re.MULTILINE).group(1)
        for name in ("train.Dockerfile", "serve.Dockerfile")
    }
    assert len(bases) == 1
    assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}", bases.pop())
