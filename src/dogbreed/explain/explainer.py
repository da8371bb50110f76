"""Explain one image's prediction: Kernel SHAP over SLIC superpixels, SageMaker Clarify's method for images.

The model is a black box: a :class:`Classifier` maps RGB views to class
probabilities. Two kinds serve the three places a model runs:

- :class:`PredictorClassifier`: an artifact's ONNX graph in this process,
  through serving's own :class:`~dogbreed.serving.inference.Predictor`;
- :class:`~dogbreed.explain.remote.EndpointClassifier`: ``invoke_endpoint``
  with a TargetModel, on a SageMaker endpoint (boto3's runtime client) or
  the ``make local-serve`` container (the SageMaker SDK's local-mode
  client), the perturbed views sent as JSON batches of lossless PNGs.

Every class is explained at once: the fit is linear in the outputs, so any
class's values cost no further model evaluations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from dogbreed.errors import DogbreedError
from dogbreed.explain import kernel_shap, superpixels

DEFAULT_SAMPLES = 256


class ExplainError(DogbreedError):
    """An explanation that cannot be made: bad settings, or a model that did not answer."""


@dataclass(frozen=True)
class Settings:
    """Clarify's ImageConfig (segments, compactness) and SHAPConfig (samples, seed, baseline)."""

    segments: int = superpixels.DEFAULT_SEGMENTS
    compactness: float = superpixels.DEFAULT_COMPACTNESS
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    baseline: str | tuple[int, ...] = superpixels.IMAGENET_MEAN_RGB
    side: int = superpixels.DEFAULT_SIDE


class Classifier(Protocol):
    labels: list[str]
    batch: int  # views per call, for progress and time checks

    def __call__(self, views: list[np.ndarray]) -> np.ndarray:
        """Class probabilities, shape (len(views), len(labels))."""
        ...


@dataclass
class Explanation:
    view: np.ndarray  # uint8 (H, W, 3): what was explained
    segments: np.ndarray  # int32 (H, W): SLIC labels 0..M-1
    probabilities: np.ndarray  # (C,): f(view)
    baseline: np.ndarray  # (C,): f(every segment off)
    values: np.ndarray  # (M, C): each segment's Shapley value for each class
    evaluations: int  # model evaluations spent, the two anchors included
    complete: bool  # False when the time limit cut the sampling short
    seconds: float = 0.0
    labels: list[str] = field(default_factory=list)
    compactness: float = superpixels.DEFAULT_COMPACTNESS  # SLIC's, raised where the first try merged too much

    def top(self, k: int) -> list[int]:
        return [int(i) for i in np.argsort(-self.probabilities, kind="stable")[:k]]

    def heat_map(self, class_index: int) -> np.ndarray:
        return superpixels.heat_map(self.view, self.segments, self.values[:, class_index])

    def efficiency_gap(self) -> float:
        """Largest |sum of values - (f(x) - f(baseline))| over the classes: SHAP's efficiency property."""
        return float(np.abs(self.values.sum(axis=0) - (self.probabilities - self.baseline)).max())

    def summary(self, class_index: int, *, images: bool = True) -> dict[str, Any]:
        """One class's explanation as JSON: the values by segment, and the heat map and segment map as PNGs."""
        entry: dict[str, Any] = {
            "label": self.labels[class_index] if self.labels else None,
            "class_index": class_index,
            "probability": round(float(self.probabilities[class_index]), 6),
            "baseline_probability": round(float(self.baseline[class_index]), 6),
            "segment_values": [round(float(v), 6) for v in self.values[:, class_index]],
            "segments": int(self.values.shape[0]),
            "compactness": self.compactness,
            "evaluations": self.evaluations,
            "complete": self.complete,
            "size": [int(self.view.shape[1]), int(self.view.shape[0])],
        }
        if images:
            entry["heatmap_png"] = superpixels.png_base64(self.heat_map(class_index))
            entry["segments_png"] = superpixels.png_base64(self.segments.astype(np.uint8))
        return entry


def check_settings(settings: Settings) -> None:
    if not 2 <= settings.segments <= 255:
        raise ExplainError(f"segments must be between 2 and 255, got {settings.segments}")
    if not settings.compactness > 0:
        raise ExplainError(f"compactness must be positive, got {settings.compactness}")
    if settings.samples < 1:
        raise ExplainError(f"samples must be at least 1, got {settings.samples}")
    if not 16 <= settings.side <= 1024:
        raise ExplainError(f"the explained view's side must be between 16 and 1024 pixels, got {settings.side}")


def explain(
    image: Image.Image,
    classifier: Classifier,
    settings: Settings = Settings(),
    *,
    deadline: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Explanation:
    """Shapley values of ``image``'s superpixels for every class of ``classifier``.

    ``deadline`` (a :func:`time.monotonic` time) stops the sampling early: the
    fit then uses the coalitions evaluated so far and ``complete`` is False.
    ``progress`` hears the number of model evaluations after each batch.
    """
    check_settings(settings)
    started = time.monotonic()
    view = superpixels.explained_view(image, settings.side)
    segments, compactness = superpixels.segment(view, settings.segments, settings.compactness)
    colour = superpixels.baseline_colour(view, settings.baseline)
    anchors = classifier([view, np.broadcast_to(colour, view.shape).copy()])
    full, empty = anchors[0], anchors[1]
    if progress:
        progress(2)
    coalitions = kernel_shap.coalitions(int(segments.max()) + 1, settings.samples, np.random.default_rng(settings.seed))
    outputs: list[np.ndarray] = []
    for batch in superpixels.perturbed(view, segments, coalitions.masks, colour, classifier.batch):
        if deadline is not None and time.monotonic() > deadline:
            break
        outputs.append(classifier(batch))
        if progress:
            progress(len(batch))
    done = sum(len(o) for o in outputs)
    evaluated = kernel_shap.Coalitions(coalitions.masks[:done], coalitions.weights[:done])
    values = kernel_shap.fit(evaluated, np.concatenate(outputs) if outputs else np.zeros((0, len(full))), full, empty)
    return Explanation(
        view=view,
        segments=segments,
        probabilities=full,
        baseline=empty,
        values=values,
        evaluations=done + 2,
        complete=done == len(coalitions),
        seconds=time.monotonic() - started,
        labels=list(classifier.labels),
        compactness=compactness,
    )


class PredictorClassifier:
    """An artifact's ONNX graph in this process, through serving's Predictor and its preprocessing."""

    def __init__(self, predictor: Any):
        self.predictor = predictor
        self.labels = predictor.labels
        self.batch = 16

    def __call__(self, views: list[np.ndarray]) -> np.ndarray:
        return self.predictor.probabilities_of_pixels(views)

    def probabilities_of_files(self, images: list[bytes]) -> np.ndarray:
        """Encoded images, as serving answers them."""
        return self.predictor.probabilities(images)
