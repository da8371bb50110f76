"""Pure request functions: decode the body, predict, encode the answer.

Nothing here knows about MMS or HTTP beyond status codes in errors, so every
function is tested on its own.

Request bodies:

- ``application/x-image``, ``image/jpeg``, ``image/png``: one image's bytes;
- ``application/json``: a list of base64-encoded images, or an object
  ``{"instances": [...], "top_k": 3, "probabilities": true}``.

Answer (``application/json``), one entry per image in ``results``; ``variant``
is the ONNX graph that answered (``fp32`` or ``int8``)::

    {"model": "dog-breed-classifier/model.tar.gz", "variant": "int8",
     "results": [{"predictions": [{"label": "Affenpinscher", "class_index": 0, "probability": 0.93}, ...],
                  "probabilities": [...]}]}

``probabilities`` (every class, in class-index order) appears when asked for;
``labels`` at the top level then names those classes.

A request's images are checked from their headers first: their pixels
together must fit the request's pixel budget, or the answer is 413 before any
image is decoded. They are then decoded and preprocessed one at a time, so a
request holds at most one full-size decoded image in memory.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dogbreed.artifact import EXPORT_COMMAND, served_onnx_file
from dogbreed.errors import ArtifactError
from dogbreed.images import ImageDecodeError, ImageTooLarge, image_size, open_rgb
from dogbreed.preprocess import eval_array, resize_size
from dogbreed.serving.errors import InferenceError, bad_request
from dogbreed.serving.memory import max_decoded_pixels
from dogbreed.settings import parse_bool, positive_int, text

IMAGE_TYPES = frozenset({"application/x-image", "image/jpeg", "image/png"})
JSON_TYPE = "application/json"
ACCEPTABLE = frozenset({JSON_TYPE, "application/*", "*/*", ""})

DEFAULT_TOP_K = 5
MAX_BATCH = 64
# Images per ONNX Runtime run: a JSON batch is decoded and run in chunks of this many, which bounds a
# request's working memory (measured, ResNet50 fp32 at 224 px: 64 images at once took 134 MiB, a chunk of 8
# 73 MiB, a chunk of 4 35 to 57 MiB).
RUN_CHUNK = 4
# Pixels (width x height, summed over a request's images) one request may ask the server to decode:
# ten 10-megapixel photos. DOGBREED_MAX_REQUEST_PIXELS changes it.
DEFAULT_MAX_REQUEST_PIXELS = 100_000_000


def max_request_pixels() -> int:
    return positive_int("DOGBREED_MAX_REQUEST_PIXELS", DEFAULT_MAX_REQUEST_PIXELS)


def _option(default: Any, documented_default: str, meaning: str) -> Any:
    """A request option: the reference's table of request options is generated from this metadata."""
    return field(default=default, metadata={"default": documented_default, "meaning": meaning})


@dataclass(frozen=True)
class Options:
    """What a request asks for beside its images: custom attributes (``key=value``) or a JSON body's keys."""

    top_k: int = _option(DEFAULT_TOP_K, str(DEFAULT_TOP_K), "the classes listed in `predictions`")
    probabilities: bool = _option(False, "`false`", "every class's probability, and `labels`")
    explain: bool = _option(
        False,
        "`false`",
        "each result also carries `explanation`: the top class's Kernel SHAP values over SLIC superpixels and a "
        "heat map",
    )
    # None: the explanation's own defaults (dogbreed.serving.explanations), which the documented ones state.
    explain_samples: int | None = _option(
        None,
        "128",
        "Kernel SHAP coalitions per image; each image costs this + 2 model evaluations, at most "
        "`DOGBREED_EXPLAIN_MAX_EVALUATIONS` (1024) per request, else 413",
    )
    explain_segments: int | None = _option(None, "20", "SLIC segments to ask for (2 to 255)")

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> Options:
        """Options from their raw values (custom attributes' strings, a JSON body's values), each checked: a bad
        one is 400 naming it. Keys that are not options are ignored."""
        return cls().updated(values)

    def updated(self, values: Mapping[str, Any]) -> Options:
        """These options with ``values`` (raw, checked as :meth:`parse` checks them) over them."""
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("top_k", "explain_samples", "explain_segments"):
                parsed[key] = _parse_positive(value, key)
            elif key in ("probabilities", "explain"):
                parsed[key] = _parse_bool(value, key)
        return replace(self, **parsed)


OPTION_KEYS = tuple(option.name for option in fields(Options))


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def check_accept(accept: str | None) -> None:
    types = [media_type(t) for t in (accept or "").split(",")]
    if not any(t in ACCEPTABLE for t in types):
        raise InferenceError(406, "NotAcceptable", f"cannot answer as {accept!r}; this model answers application/json")


def _parse_bool(value: Any, name: str) -> bool:
    parsed = parse_bool(value)
    if parsed is None:
        raise bad_request(f"{name} must be true or false, got {value!r}")
    return parsed


def _parse_positive(value: Any, name: str) -> int:
    """A positive integer; JSON may give it as a whole float (3.0), never as a bool, infinity or NaN."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"{name} must be a positive integer, got {str(value)[:40]!r}")
    return value


def custom_attribute_values(header: str | None) -> dict[str, str]:
    """The options' raw values in ``X-Amzn-SageMaker-Custom-Attributes: top_k=3,probabilities=true,explain=true``;
    other attributes are ignored."""
    values = {}
    for item in (header or "").replace(";", ",").split(","):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key in OPTION_KEYS:
            values[key] = value.strip()
    return values


def parse_custom_attributes(header: str | None) -> Options:
    return Options.parse(custom_attribute_values(header))


def _image_error(exc: ImageDecodeError, position: int | None) -> InferenceError:
    status = 413 if isinstance(exc, ImageTooLarge) else 400
    prefix = "" if position is None else f"instance {position}: "
    return InferenceError(status, "InvalidImage", f"{prefix}{exc}")


def decode_image(data: bytes, draft_size: int | None = None, position: int | None = None):
    """One image's bytes, decoded upright to RGB; 400 or 413 for what cannot be served."""
    if not data:
        raise bad_request("empty request body: send the image bytes")
    try:
        return open_rgb(data, draft_size=draft_size, max_decoded_pixels=max_decoded_pixels())
    except ImageDecodeError as exc:
        raise _image_error(exc, position) from exc


def check_pixels(images: list[bytes], budget: int, batch: bool) -> None:
    """Refuse, from the headers alone, images that are not images or decode to more than ``budget`` pixels."""
    total = 0
    for position, data in enumerate(images):
        if not data:
            raise bad_request("empty request body: send the image bytes")
        try:
            width, height = image_size(data)
        except ImageDecodeError as exc:
            raise _image_error(exc, position if batch else None) from exc
        total += width * height
        if total > budget:
            raise InferenceError(
                413, "TooManyPixels", f"the request's images hold over {budget} pixels; send fewer or smaller images"
            )


def parse_body(
    body: bytes | bytearray | None,
    content_type: str | None,
    options: Options = Options(),
    pixel_budget: int | None = None,
) -> tuple[tuple[bytes, ...], Options]:
    """A request body's encoded images, checked from their headers, and the request's options: ``options`` (the
    custom attributes'), with a JSON object body's keys over them.

    Nothing is decoded here beyond the image headers: :meth:`Predictor.probabilities` decodes them one by one.
    """
    kind = media_type(content_type)
    body = bytes(body or b"")
    if kind in IMAGE_TYPES:
        images = [body]
    elif kind == JSON_TYPE:
        instances, body_values = _json_parts(_parse_json(body))
        options = options.updated(body_values)  # a bad option is named before the instances are looked at
        images = _decode_instances(_checked_instances(instances))
    else:
        raise InferenceError(
            415,
            "UnsupportedMediaType",
            f"content type {content_type!r} is not supported; send {', '.join(sorted(IMAGE_TYPES))} or {JSON_TYPE}",
        )
    check_pixels(images, pixel_budget or max_request_pixels(), kind == JSON_TYPE)
    return tuple(images), options


def _parse_json(body: bytes) -> Any:
    if not body:
        raise bad_request("empty request body: send a JSON list of base64-encoded images")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("invalid JSON: nested too deeply") from None


def _json_parts(payload: Any) -> tuple[Any, dict[str, Any]]:
    """A JSON body's instances (the list itself, or ``instances`` of an object) and the options the object sets."""
    if isinstance(payload, dict):
        return payload.get("instances"), {key: payload[key] for key in OPTION_KEYS if key in payload}
    return payload, {}


def _checked_instances(payload: Any) -> list[Any]:
    if not isinstance(payload, list) or not payload:
        raise bad_request('JSON body must be a non-empty list of base64-encoded images, or {"instances": [...]}')
    if len(payload) > MAX_BATCH:
        raise InferenceError(413, "TooManyImages", f"at most {MAX_BATCH} images per request, got {len(payload)}")
    return payload


def _decode_instances(payload: list[Any]) -> list[bytes]:
    images = []
    for i, item in enumerate(payload):
        if not isinstance(item, str):
            raise bad_request(f"instance {i} is not a base64 string")
        try:
            images.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise bad_request(f"instance {i} is not valid base64") from None
    return images


def intra_op_threads() -> int | None:
    """ONNX Runtime's threads per worker: the launcher sizes them with the worker count, so cores are not
    oversubscribed."""
    return positive_int("DOGBREED_INTRA_OP_THREADS")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Predictor:
    """An ONNX Runtime session over the variant training chose (fp32 or int8), with the artifact's preprocessing."""

    def __init__(self, folder: Path, metadata: dict[str, Any], threads: int | None = None):
        import onnxruntime

        self.labels: list[str] = metadata["labels"]
        self.variant, file = served_onnx_file(metadata)
        self.input_size: int = metadata["input_size"]
        self.mean, self.std = tuple(metadata["mean"]), tuple(metadata["std"])
        self.draft_size = resize_size(self.input_size)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or intra_op_threads() or 0
        options.inter_op_num_threads = 1
        # No arena: a run's activations go back to the allocator when it ends, so an idle model holds only its
        # weights and a request's working memory stays bounded by the batch chunk (RUN_CHUNK).
        options.enable_cpu_mem_arena = False
        # Idle threads sleep instead of spinning: the worker shares the cores with MMS's JVM and other workers.
        options.add_session_config_entry("session.intra_op.allow_spinning", text("DOGBREED_ORT_SPIN", "0"))
        path = folder / file
        if not path.is_file():
            raise ArtifactError(f"{file} is missing from the artifact; convert it again with {EXPORT_COMMAND}")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a corrupt graph
            raise ArtifactError(f"{file} is not a loadable ONNX graph: {str(exc).splitlines()[0][:200]}") from exc
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, images: list[bytes]) -> np.ndarray:
        """Class probabilities for encoded images, RUN_CHUNK at a time: each chunk decoded and preprocessed one
        image at a time, then run as one batch, so a request's working memory does not grow with its size."""
        logits = [self._logits(images, start) for start in range(0, len(images), RUN_CHUNK)]
        return softmax(np.concatenate(logits))

    def probabilities_of_pixels(self, views: list[np.ndarray]) -> np.ndarray:
        """Class probabilities for decoded RGB images (uint8 arrays, H x W x 3), RUN_CHUNK at a time: what an
        explanation asks of the model."""
        logits = [
            self._run(views[start : start + RUN_CHUNK], lambda _, view: Image.fromarray(view))
            for start in range(0, len(views), RUN_CHUNK)
        ]
        return softmax(np.concatenate(logits))

    def decode(self, data: bytes, position: int | None = None) -> Image.Image:
        return decode_image(data, self.draft_size, position)

    def _logits(self, images: list[bytes], start: int) -> np.ndarray:
        batch = len(images) > 1
        return self._run(
            images[start : start + RUN_CHUNK], lambda i, data: self.decode(data, start + i if batch else None)
        )

    def _run(self, items: Sequence[Any], to_image: Callable[[int, Any], Image.Image]) -> np.ndarray:
        """One ONNX Runtime run over ``items``, each made an image by ``to_image(position, item)`` only when it
        is preprocessed, and dropped after: a chunk never holds two decoded images at once."""
        chunk = np.stack(
            [eval_array(to_image(i, item), self.input_size, self.mean, self.std) for i, item in enumerate(items)]
        )
        return self.session.run(None, {self.input_name: chunk})[0]


def encode_response(
    probabilities: np.ndarray,
    labels: list[str],
    options: Options,
    target: str | None,
    variant: str | None = None,
    explanations: list[dict[str, Any]] | None = None,
) -> bytes:
    k = min(options.top_k, len(labels))
    results: list[dict[str, Any]] = []
    for row in probabilities:
        top = np.argsort(-row, kind="stable")[:k]
        entry: dict[str, Any] = {
            "predictions": [
                {"label": labels[i], "class_index": int(i), "probability": round(float(row[i]), 6)} for i in top
            ]
        }
        if options.probabilities:
            entry["probabilities"] = [round(float(p), 6) for p in row]
        if explanations is not None:
            entry["explanation"] = explanations[len(results)]
        results.append(entry)
    answer: dict[str, Any] = {"model": target, "variant": variant, "results": results}
    if options.probabilities:
        answer["labels"] = labels
    return json.dumps(answer).encode("utf-8")
