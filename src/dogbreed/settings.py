"""Settings read from environment variables, when called and never at import time."""

from __future__ import annotations

import os
from typing import overload


@overload
def positive_int(name: str, default: int) -> int: ...
@overload
def positive_int(name: str, default: None = None) -> int | None: ...


def positive_int(name: str, default: int | None = None) -> int | None:
    """The variable ``name`` as a positive integer; ``default`` when it is unset, empty or anything else."""
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else default


def natural_int(name: str, default: int) -> int:
    """The variable ``name`` as an integer of 0 or more; ``default`` when it is unset, empty or anything else."""
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default
