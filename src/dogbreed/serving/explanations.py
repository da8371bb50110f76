"""Explanations inline with predictions: ``explain=true`` in the custom attributes (or a JSON body's object).

Each image of the request gets, beside its predictions, its top class's
Kernel SHAP values over SLIC superpixels and a heat map
(:mod:`dogbreed.explain`). A request is bounded twice:

- model evaluations: ``explain_samples`` + 2 per image, at most
  ``DOGBREED_EXPLAIN_MAX_EVALUATIONS`` (1024) in all, or the answer is 413
  before any work;
- time: past ``DOGBREED_EXPLAIN_TIME_LIMIT_MS`` (10 s) from the start of the
  explanations, sampling stops and each unfinished explanation is fitted on
  the coalitions evaluated so far, marked ``"complete": false``.

The first explanation in a worker imports scikit-image's SLIC; its memory
(:data:`EXPLAINER_COST`) is charged to the worker's model budget like a model
that never unloads, so where it does not fit the answer is 507 and the loaded
models are untouched.
"""

from __future__ import annotations

import time
from typing import Any

from dogbreed.explain.explainer import ExplainError, PredictorClassifier, Settings, check_settings, explain
from dogbreed.serving.cache import ModelCache
from dogbreed.serving.errors import InferenceError, bad_request
from dogbreed.serving.memory import LoadCost, MiB
from dogbreed.settings import positive_int

DEFAULT_MAX_EVALUATIONS = 1024
DEFAULT_TIME_LIMIT_MS = 10_000
DEFAULT_SAMPLES = 128
# Importing skimage.segmentation's SLIC into a worker that has ONNX Runtime and Pillow: 42 MiB more RSS
# (scikit-image 0.26, SciPy 1.17), rounded up.
EXPLAINER_COST = LoadCost(steady=48 * MiB, peak=48 * MiB)
EXPLAINER_KEY = "(explanations)"


def max_evaluations() -> int:
    return positive_int("DOGBREED_EXPLAIN_MAX_EVALUATIONS", DEFAULT_MAX_EVALUATIONS)


def time_limit_seconds() -> float:
    return positive_int("DOGBREED_EXPLAIN_TIME_LIMIT_MS", DEFAULT_TIME_LIMIT_MS) / 1000


def settings_for(samples: int | None, segments: int | None) -> Settings:
    settings = Settings(
        samples=DEFAULT_SAMPLES if samples is None else samples,
        segments=Settings.segments if segments is None else segments,
    )
    try:
        check_settings(settings)
    except ExplainError as exc:
        raise bad_request(f"explain_{exc}") from None
    return settings


def check_evaluations(images: int, settings: Settings) -> None:
    needed = images * (settings.samples + 2)
    allowed = max_evaluations()
    if needed > allowed:
        raise InferenceError(
            413,
            "TooManyEvaluations",
            f"explaining {images} image(s) at {settings.samples} samples takes {needed} model evaluations; this "
            f"endpoint allows {allowed} a request: lower explain_samples or send fewer images",
        )


def load_explainer(cache: ModelCache) -> None:
    """Import SLIC once, charged to the model budget (507 where it does not fit)."""

    def setup() -> None:
        import skimage.segmentation  # noqa: F401

    cache.reserve(EXPLAINER_KEY, EXPLAINER_COST, setup, what="explanations")


def explain_images(predictor: Any, images: list[bytes], settings: Settings, cache: ModelCache) -> list[dict]:
    """Each image's explanation of its top class, as JSON, within the request's time bound (its evaluation bound
    is checked by the caller, before any image is decoded: :func:`check_evaluations`)."""
    load_explainer(cache)
    deadline = time.monotonic() + time_limit_seconds()
    classifier = PredictorClassifier(predictor)
    answers = []
    for position, data in enumerate(images):
        image = predictor.decode(data, position if len(images) > 1 else None)
        explanation = explain(image, classifier, settings, deadline=deadline)
        answers.append(explanation.summary(explanation.top(1)[0]))
    return answers
