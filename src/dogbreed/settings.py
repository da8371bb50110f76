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
    return _int_at_least(name, 1, default)


@overload
def natural_int(name: str, default: int) -> int: ...
@overload
def natural_int(name: str, default: None = None) -> int | None: ...


def natural_int(name: str, default: int | None = None) -> int | None:
    """The variable ``name`` as an integer of 0 or more; ``default`` when it is unset, empty or anything else."""
    return _int_at_least(name, 0, default)


def _int_at_least(name: str, minimum: int, default: int | None) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() and int(value) >= minimum else default


TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off"})


def parse_bool(value: object) -> bool | None:
    """``value`` as a boolean, from a bool or the words above (any case); None when it is neither."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def flag(name: str) -> bool:
    """Whether the variable ``name`` is set to a true word; unset, empty or anything else is False."""
    return parse_bool(os.environ.get(name, "")) is True
