"""The request workflow: find the model a request is for, run it, map errors to HTTP.

Three ways a model is chosen:

- routing: the handler's model folder is a model store; the
  ``X-Amzn-SageMaker-Target-Model`` header names an archive (or artifact
  folder) relative to it, which is unpacked once and loaded lazily into a
  LRU cache bounded by the server's memory budget. Without the header, the
  only target is used when there is exactly one; otherwise the answer is 400
  with the list of targets.
- direct: the handler's model folder is itself an artifact (batch transform,
  single-model endpoints).
- shared (multi-model mode): the models that the SageMaker platform loads
  with ``POST /models`` share this worker. The MMS guard turns each load,
  unload and ``/models/NAME/invoke`` into a request to this worker carrying
  the server's control token (:data:`CONTROL_HEADER`); a request without it
  is refused.

An archive that cannot be served (corrupt, unsafe, too large, not an
artifact) is refused once and remembered until the file changes, so a broken
target costs no decompression on later requests. No answer names a server
path; the log has the detail.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dogbreed.artifact import METADATA_FILE, read_metadata, served_onnx_file
from dogbreed.errors import ArtifactError
from dogbreed.explain.explainer import Settings
from dogbreed.serving.cache import Admit, ModelCache
from dogbreed.serving.errors import InferenceError, bad_request, not_found, redact_paths
from dogbreed.serving.explanations import check_evaluations, explain_images, settings_for
from dogbreed.serving.inference import (
    JSON_TYPE,
    Options,
    Predictor,
    check_accept,
    encode_response,
    parse_body,
    parse_custom_attributes,
)
from dogbreed.serving.memory import Budget, Ledger, LoadCost
from dogbreed.serving.store import (
    LRU,
    TargetListing,
    archive_key,
    clean_staging,
    default_unpack_dir,
    resolve_target,
    unpacked,
)
from dogbreed.settings import natural_int, positive_int, text

log = logging.getLogger(__name__)

TARGET_HEADER = "x-amzn-sagemaker-target-model"
# The ONNX variant that answered, also in the JSON body as "variant".
VARIANT_HEADER = "X-Dogbreed-Model-Variant"
ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
# Set by the MMS guard on the requests it makes of a shared worker; the token is the server's secret.
CONTROL_HEADER = "x-dogbreed-control"
COMMAND_HEADER = "x-dogbreed-command"
MODEL_NAME_HEADER = "x-dogbreed-model"
MODEL_URL_HEADER = "x-dogbreed-model-url"
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


def cache_size() -> int | None:
    """An optional bound on loaded models per worker by count; memory bounds them anyway."""
    return positive_int("DOGBREED_MAX_LOADED_MODELS")


def control_token() -> str | None:
    """The secret that the MMS guard's requests carry in multi-model mode; None in the other modes."""
    return text("DOGBREED_CONTROL_TOKEN")


def worker_ledger() -> Ledger | None:
    """This worker's share of the server's model memory, from the launcher's figures (none without them)."""
    budget = Budget.from_env()
    return None if budget is None else Ledger(budget)


def load_predictor(folder: Path, target: str, admit: Admit | None = None) -> Predictor:
    """The artifact in ``folder`` as a :class:`Predictor`; ``admit`` first hears its cost and may refuse it."""
    try:
        metadata = read_metadata(folder)
        if admit is not None:
            _, graph = served_onnx_file(metadata)
            if (folder / graph).is_file():
                admit(LoadCost.of_graph(folder / graph))
        return Predictor(folder, metadata)
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
        self.cache = ModelCache(worker_ledger(), 1 if self.direct else cache_size())
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
            return self.cache.get_or_load(target, lambda admit: load_predictor(path, target, admit))
        # A replaced archive is another version: it gets its own entries.
        key = f"{target}@{archive_key(path)}"
        refusal = self.refused.get(key)
        if refusal is not None:
            raise InferenceError(*refusal)
        try:
            return self.cache.get_or_load(key, lambda admit: self._load_archive(path, target, admit))
        except InferenceError as exc:
            if exc.status < 500:  # the archive's fault, until it changes; a server-side failure may pass
                self.refused.put(key, (exc.status, exc.code, exc.message))
            raise

    def _load_archive(self, archive: Path, target: str, admit: Admit) -> Predictor:
        with unpacked(archive, self.unpack_dir) as folder:
            return load_predictor(folder, target, admit)

    def handle(self, headers: Mapping[str, str], body: bytes | None) -> Response:
        lower = {k.lower(): v for k, v in headers.items()}
        return answer(lambda: self._predict(lower, body))

    def _predict(self, lower: Mapping[str, str], body: bytes | None) -> Response:
        request = parse_request(lower, body, self.max_payload)
        target, path = self._choose(request.target)
        return predict(self._predictor(target, path), target, request, self.cache)


@dataclass(frozen=True)
class Request:
    """One inference request, parsed and checked in full before any model is chosen or loaded."""

    target: str | None
    images: tuple[bytes, ...]  # encoded; their headers are checked against the pixel budget
    options: Options
    explanation: Settings | None  # explain=true: its settings, with the evaluation bound checked


def parse_request(lower: Mapping[str, str], body: bytes | None, max_payload: int | None) -> Request:
    """Headers first (size, ``Accept``, custom attributes), then the body (images and a JSON body's options).

    A malformed request is refused here, so it costs no unpacking or loading of the model it names.
    """
    if max_payload is not None and body is not None and len(body) > max_payload:
        raise InferenceError(413, "PayloadTooLarge", f"request body is {len(body)} bytes; the maximum is {max_payload}")
    check_accept(lower.get("accept"))
    header_options = parse_custom_attributes(lower.get(ATTRIBUTES_HEADER))
    if header_options.explain:  # the header's explanation bounds are named before the body is read
        settings_for(header_options.explain_samples, header_options.explain_segments)
    images, options = parse_body(body, lower.get("content-type"), header_options)
    explanation = None
    if options.explain:  # bounded before any image is decoded
        explanation = settings_for(options.explain_samples, options.explain_segments)
        check_evaluations(len(images), explanation)
    return Request(lower.get(TARGET_HEADER), images, options, explanation)


def predict(predictor: Predictor, target: str, request: Request, cache: ModelCache) -> Response:
    images = list(request.images)
    probabilities = predictor.probabilities(images)
    explanations = None
    if request.explanation is not None:
        explanations = explain_images(predictor, images, request.explanation, cache)
    return Response(
        200,
        encode_response(probabilities, predictor.labels, request.options, target, predictor.variant, explanations),
        variant=predictor.variant,
    )


def answer(run) -> Response:
    """``run()``'s response, or the JSON error it raised; a bug is a 500 that names nothing of the server."""
    try:
        return run()
    except InferenceError as exc:
        log.info("request refused: %d %s", exc.status, exc.message)
        return Response(exc.status, exc.body())
    except Exception:  # a bug, not the client's fault: say so, and leave the detail to the log
        log.exception("request failed")
        return Response(
            500, InferenceError(500, "InternalError", "the server failed to answer; its log has the detail").body()
        )


class SharedWorkflow:
    """Multi-model mode: the models the platform loaded, shared by this worker, by name.

    Every request must come from the MMS guard (the control token); the guard
    keeps the registry of loaded names and sends ``load``, ``unload`` and
    ``invoke`` commands. An ``invoke`` also names the model's folder, so a
    worker that MMS restarted loads the model again on its first request.
    Models are never evicted here: past the budget a load is 507, and the
    platform unloads what it chooses.
    """

    def __init__(self, model_root: Path, token: str):
        self.model_root = Path(text("DOGBREED_MODEL_ROOT") or model_root).resolve()
        self.token = token
        self.cache = ModelCache(worker_ledger(), evict=False)
        self.max_payload = max_payload()

    def handle(self, headers: Mapping[str, str], body: bytes | None) -> Response:
        lower = {k.lower(): v for k, v in headers.items()}
        return answer(lambda: self._run(lower, body))

    def _run(self, lower: Mapping[str, str], body: bytes | None) -> Response:
        if not hmac.compare_digest(lower.get(CONTROL_HEADER, "").encode(), self.token.encode()):
            raise bad_request("Parameter model_name is required.")  # MMS's answer when no model is named
        command, name = lower.get(COMMAND_HEADER), lower.get(MODEL_NAME_HEADER, "")
        if command == "unload":
            if not self.cache.drop(name):
                raise not_found(f"Model not found: {name}")
            return status_response(f'Model "{name}" unregistered')
        folder = self._folder(lower.get(MODEL_URL_HEADER, ""))
        if command == "load":
            self._predictor(name, folder)
            return status_response(f'Model "{name}" registered', memory_bytes=self.cache.cost(name))
        if command != "invoke":
            raise bad_request(f"unknown command {command!r}")
        request = parse_request(lower, body, self.max_payload)
        return predict(self._predictor(name, folder), name, request, self.cache)

    def _folder(self, url: str) -> Path:
        folder = Path(url).resolve()
        if self.model_root not in folder.parents:  # the guard checked it; a second look costs nothing
            raise bad_request("url must name a folder inside the model root")
        return folder

    def _predictor(self, name: str, folder: Path) -> Predictor:
        return self.cache.get_or_load(name, lambda admit: load_predictor(folder, name, admit))


def status_response(message: str, **extra) -> Response:
    return Response(200, json.dumps({"status": message, **{k: v for k, v in extra.items() if v is not None}}).encode())
