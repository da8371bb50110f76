"""The request workflow: find the model a request is for, run it, map errors to HTTP.

Two ways a model is chosen:

- routing: the handler's model folder is a model store; the
  ``X-Amzn-SageMaker-Target-Model`` header names an archive (or artifact
  folder) relative to it, which is unpacked once and loaded lazily into a
  bounded LRU cache. Without the header, the only target is used when there
  is exactly one; otherwise the answer is 400 with the list of targets.
- direct: the handler's model folder is itself an artifact, as when the
  SageMaker multi-model platform loads each model with ``POST /models``.

An archive that cannot be served (corrupt, unsafe, too large, not an
artifact) is refused once and remembered until the file changes, so a broken
target costs no decompression on later requests. No answer names a server
path; the log has the detail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dogbreed.artifact_format import METADATA_FILE, read_metadata
from dogbreed.errors import ArtifactError
from dogbreed.serving.errors import InferenceError, bad_request, redact_paths
from dogbreed.serving.inference import (
    JSON_TYPE,
    Predictor,
    check_accept,
    decode_request,
    encode_response,
    parse_custom_attributes,
)
from dogbreed.serving.store import (
    LRU,
    ModelCache,
    TargetListing,
    archive_key,
    clean_staging,
    default_unpack_dir,
    resolve_target,
    unpacked,
)
from dogbreed.settings import natural_int, positive_int

log = logging.getLogger(__name__)

TARGET_HEADER = "x-amzn-sagemaker-target-model"
# The ONNX variant that answered, also in the JSON body as "variant".
VARIANT_HEADER = "X-Dogbreed-Model-Variant"
ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
DEFAULT_CACHE_SIZE = 8
# Archives remembered as unservable, per worker.
REFUSED_ARCHIVES = 256


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    variant: str | None = None


def max_payload() -> int | None:
    return natural_int("DOGBREED_MAX_PAYLOAD_BYTES")


def cache_size() -> int:
    return positive_int("DOGBREED_MAX_LOADED_MODELS", DEFAULT_CACHE_SIZE)


def load_predictor(folder: Path, target: str) -> Predictor:
    try:
        return Predictor(folder, read_metadata(folder))
    except ArtifactError as exc:
        log.warning("target %s: %s", target, exc)
        raise InferenceError(
            400,
            "ModelArtifactError",
            f"target model {target!r} is not a valid model artifact: {redact_paths(str(exc))}",
        ) from exc
    except MemoryError as exc:
        raise InferenceError(507, "InsufficientMemory", f"not enough memory to load {target!r}") from exc


class Workflow:
    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self.direct = (self.model_dir / METADATA_FILE).is_file()
        self.cache = ModelCache(1 if self.direct else cache_size())
        self.refused = LRU(REFUSED_ARCHIVES)
        self.targets = TargetListing(self.model_dir)
        self.max_payload = max_payload()
        self.unpack_dir = default_unpack_dir()
        clean_staging(self.unpack_dir)

    def _choose(self, target: str | None) -> tuple[str, Path]:
        if self.direct:
            return self.model_dir.name, self.model_dir
        if not target:
            targets = self.targets()
            if len(targets) != 1:
                raise bad_request(
                    f"set the X-Amzn-SageMaker-Target-Model header; available targets: {', '.join(targets) or 'none'}"
                )
            target = targets[0]
        return target, resolve_target(self.model_dir, target, self.targets)

    def _predictor(self, target: str, path: Path) -> Predictor:
        if not path.is_file():
            return self.cache.get_or_load(target, lambda: load_predictor(path, target))
        # A replaced archive is another version: it gets its own entries.
        key = f"{target}@{archive_key(path)}"
        refusal = self.refused.get(key)
        if refusal is not None:
            raise InferenceError(*refusal)
        try:
            return self.cache.get_or_load(key, lambda: self._load_archive(path, target))
        except InferenceError as exc:
            if exc.status < 500:  # the archive's fault, until it changes; a server-side failure may pass
                self.refused.put(key, (exc.status, exc.code, exc.message))
            raise

    def _load_archive(self, archive: Path, target: str) -> Predictor:
        with unpacked(archive, self.unpack_dir) as folder:
            return load_predictor(folder, target)

    def handle(self, headers: Mapping[str, str], body: bytes | None) -> Response:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            if self.max_payload is not None and body is not None and len(body) > self.max_payload:
                raise InferenceError(
                    413, "PayloadTooLarge", f"request body is {len(body)} bytes; the maximum is {self.max_payload}"
                )
            check_accept(lower.get("accept"))
            options = parse_custom_attributes(lower.get(ATTRIBUTES_HEADER))
            target, path = self._choose(lower.get(TARGET_HEADER))
            predictor = self._predictor(target, path)
            images = decode_request(body, lower.get("content-type"), options)
            probabilities = predictor.probabilities(images)
            return Response(
                200,
                encode_response(probabilities, predictor.labels, options, target, predictor.variant),
                variant=predictor.variant,
            )
        except InferenceError as exc:
            log.info("request refused: %d %s", exc.status, exc.message)
            return Response(exc.status, exc.body())
        except Exception:  # a bug, not the client's fault: say so, and leave the detail to the log
            log.exception("request failed")
            return Response(
                500, InferenceError(500, "InternalError", "the server failed to answer; its log has the detail").body()
            )
