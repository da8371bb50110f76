"""Workflows around the images: SageMaker local mode, registries, cloud jobs and endpoints."""

from __future__ import annotations


def parse_pairs(items: list[str], what: str, error: type[Exception] = ValueError) -> dict[str, str]:
    """``NAME=VALUE`` items (``-H``, ``--grid``, ``--model``) as a dict; ``error`` for a malformed one."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise error(f"{what} must look like NAME=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs
