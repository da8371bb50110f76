"""The project's errors: one base, whose message is meant for the user as it stands. A command line or job reports
them as one line through :func:`run_cli`; the server maps its own to a 4xx JSON body."""

from __future__ import annotations

import sys
from collections.abc import Callable


class DogbreedError(Exception):
    """Base class: the message is meant for the user, as it stands."""


class ConfigError(DogbreedError):
    """A hyperparameter or setting that cannot work."""


class DataError(DogbreedError):
    """The dataset is missing, malformed or inconsistent."""


class WeightsError(DogbreedError):
    """Pretrained weights could not be found, downloaded or loaded."""


class ArtifactError(DogbreedError):
    """A model artifact is missing, corrupt or inconsistent."""


class CheckpointError(DogbreedError):
    """A checkpoint exists but cannot be resumed from."""


def run_cli(
    prog: str,
    action: Callable[[], object],
    errors: tuple[type[Exception], ...] = (DogbreedError,),
) -> int:
    """Run a command-line tool's work and return its exit code: the action's own when it returns an int, else
    0; 1 with one line ``prog: error: ...`` when it raises one of ``errors`` (the user's
    problem, said plainly; anything else is a bug and keeps its traceback)."""
    try:
        result = action()
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
