"""The request workflow: find the model a request is for, run it, map errors to HTTP.

Two ways a model is chosen:

- routing: the handler's model folder is a model store; the
  ``X-Amzn-SageMaker-Target-Model`` header names an archive (or artifact
  folder) relative to it, which is unpacked once and loaded lazily into a
  bounded LRU cache. Without the header, the only target is used when there
  is exactly one; otherwise the answer is 400 with the list of targets.
- direct: the handler's model folder is itself an artifact, as when the
  SageMaker multi-model platform loads each model with ``POST /models``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dogbreed.artifact import METADATA_FILE, load_artifact
from dogbreed.errors import ArtifactError
from dogbreed.serving.errors import InferenceError, bad_request
from dogbreed.serving.inference import (JSON_TYPE, Predictor, check_accept, decode_request, encode_response,
                                        parse_custom_attributes)
from dogbreed.serving.store import ModelCache, archive_key, list_targets, resolve_target, unpack

log = logging.getLogger(__name__)

TARGET_HEADER = "x-amzn-sagemaker-target-model"
ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
DEFAULT_CACHE_SIZE = 8


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE


def max_payload() -> int | None:
    value = os.environ.get("DOGBREED_MAX_PAYLOAD_BYTES", "")
    return int(value) if value.isdigit() else None


def cache_size() -> int:
    value = os.environ.get("DOGBREED_MAX_LOADED_MODELS", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_CACHE_SIZE


def load_predictor(path: Path) -> Predictor:
    folder = unpack(path) if path.is_file() else path
    try:
        return Predictor(*load_artifact(folder))
    except ArtifactError as exc:
        raise InferenceError(400, "ModelArtifactError", str(exc)) from exc
    except MemoryError as exc:
        raise InferenceError(507, "InsufficientMemory", f"not enough memory to load {path.name}") from exc


class Workflow:
    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self.direct = (self.model_dir / METADATA_FILE).is_file()
        self.cache = ModelCache(1 if self.direct else cache_size(), load_predictor)
        self.max_payload = max_payload()

    def _choose(self, target: str | None) -> tuple[str, Path]:
        if self.direct:
            return self.model_dir.name, self.model_dir
        if not target:
            targets = list_targets(self.model_dir)
            if len(targets) != 1:
                raise bad_request(f"set the X-Amzn-SageMaker-Target-Model header; available targets: "
                                  f"{', '.join(targets) or 'none'}")
            target = targets[0]
        return target, resolve_target(self.model_dir, target)

    def handle(self, headers: Mapping[str, str], body: bytes | None) -> Response:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            if self.max_payload is not None and body is not None and len(body) > self.max_payload:
                raise InferenceError(413, "PayloadTooLarge",
                                     f"request body is {len(body)} bytes; the maximum is {self.max_payload}")
            check_accept(lower.get("accept"))
            options = parse_custom_attributes(lower.get(ATTRIBUTES_HEADER))
            target, path = self._choose(lower.get(TARGET_HEADER))
            # A replaced archive is another version: it gets its own cache entry.
            key = f"{target}@{archive_key(path)}" if path.is_file() else target
            predictor = self.cache.get(key, path)
            images = decode_request(body, lower.get("content-type"), options, predictor.draft_size)
            probabilities = predictor.probabilities(images)
            return Response(200, encode_response(probabilities, predictor.labels, options, target))
        except InferenceError as exc:
            log.info("request refused: %d %s", exc.status, exc.message)
            return Response(exc.status, exc.body())
        except Exception as exc:  # a bug, not the client's fault: say so without a traceback in the body
            log.exception("request failed")
            return Response(500, InferenceError(500, "InternalError", f"{type(exc).__name__}: {exc}").body())
