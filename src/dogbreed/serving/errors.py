"""Request errors with the HTTP status and JSON body the client gets."""

from __future__ import annotations

import json
import re

from dogbreed.errors import DogbreedError

# An absolute POSIX path, not part of a word, a media type or a URL ("application/json", "http://h/p").
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/:,;()\[\]]+/)*([^\s'\"/:,;()\[\]]+)")


def redact_paths(message: str) -> str:
    """``message`` with every absolute path cut to its last component: error bodies name no server folders."""
    return _ABSOLUTE_PATH.sub(lambda match: match.group(1), message)


class InferenceError(DogbreedError):
    """An error meant for the client: ``status`` is the HTTP status, ``code`` a stable name."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return json.dumps({"code": self.status, "type": self.code, "message": self.message}).encode("utf-8")


def bad_request(message: str) -> InferenceError:
    return InferenceError(400, "BadRequest", message)


def not_found(message: str) -> InferenceError:
    return InferenceError(404, "ModelNotFound", message)
