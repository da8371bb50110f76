"""Workflows around the images: SageMaker local mode, registries, cloud jobs and endpoints."""

from __future__ import annotations

import shutil
import subprocess

# The SageMaker SDK's configuration for every session the workflows open: its telemetry sends usage data over
# HTTP, and the workflows opt out.
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def docker_engine_problem() -> str | None:
    """Why Docker cannot run or push images here, in a few words; None when its engine answers."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "docker info failed"
    return None


def parse_pairs(items: list[str], what: str, error: type[Exception]) -> dict[str, str]:
    """``NAME=VALUE`` items (``-H``, ``--grid``, ``--model``) as a dict; ``error`` for a malformed one."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise error(f"{what} must look like NAME=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs
