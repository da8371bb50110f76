"""The image side of an explanation: the view that is explained, its SLIC superpixels, the perturbed copies the
model is asked about, and the heat map that shows the answer.

The explained view is the centre square of the image scaled so its shorter
side is :data:`DEFAULT_SIDE` pixels. A model's own preprocessing then scales
and crops it as it would the original (for 224-pixel models: no scaling, the
same centre crop), so the same view sent in-process, to a local server or to
an endpoint gets the same answers.

Segments switched off take the baseline colour: by default ImageNet's mean
colour, which the models' normalization maps to zero, the input that carries
no evidence. The view's own mean colour is the other choice; it is a poor
one where a class is told by its colour, since the baseline then still
shows that colour (on the bundled sample it left every value near zero for
the amber class).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from dogbreed.preprocess import IMAGENET_MEAN, center_crop, resize_shorter_side

DEFAULT_SIDE = 256
# Clarify's ImageConfig passes these to scikit-image's SLIC; its own default is 100 segments.
DEFAULT_SEGMENTS = 20
DEFAULT_COMPACTNESS = 10.0
IMAGENET_MEAN_RGB = tuple(round(255 * channel) for channel in IMAGENET_MEAN)  # (124, 116, 104)


def explained_view(image: Image.Image, side: int = DEFAULT_SIDE) -> np.ndarray:
    """The ``side`` x ``side`` RGB view of ``image`` that is explained, as uint8 (H, W, 3)."""
    return np.asarray(center_crop(resize_shorter_side(image.convert("RGB"), side), side), dtype=np.uint8)


def mask_view(mask: Image.Image, side: int = DEFAULT_SIDE) -> np.ndarray:
    """A mask of the original image (mode L or 1) in the explained view's pixels, as bool (H, W)."""
    scaled = resize_shorter_side(mask.convert("L"), side, Image.Resampling.NEAREST)
    return np.asarray(center_crop(scaled, side)) > 127


def segment(
    view: np.ndarray, segments: int = DEFAULT_SEGMENTS, compactness: float = DEFAULT_COMPACTNESS
) -> tuple[np.ndarray, float]:
    """SLIC superpixels of ``view`` (labels 0..M-1, int32 (H, W)) and the compactness that made them.

    SLIC is deterministic. On fine repeating patterns (stripes) its connectivity
    step can merge nearly everything into one segment; where it gives fewer
    than half the segments asked for, the compactness is raised tenfold (twice
    at most), which makes the segments more regular.
    """
    from skimage.segmentation import slic  # imported on first use: it costs a serving worker about 40 MiB

    for attempt in range(3):
        labels = slic(view, n_segments=segments, compactness=compactness, start_label=0, channel_axis=-1)
        # SLIC may skip label numbers; renumber so every label in 0..M-1 names a segment.
        found, dense = np.unique(labels, return_inverse=True)
        if 2 * len(found) >= segments or attempt == 2:
            break
        compactness *= 10
    return dense.reshape(labels.shape).astype(np.int32), compactness


def baseline_colour(view: np.ndarray, baseline: str | Sequence[int] = IMAGENET_MEAN_RGB) -> np.ndarray:
    """The colour of a switched-off segment: an RGB triple, or ``"mean"`` for the view's mean colour."""
    if baseline == "mean":
        return view.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    return np.asarray(baseline, dtype=np.uint8)


def perturbed(
    view: np.ndarray, labels: np.ndarray, masks: np.ndarray, colour: np.ndarray, chunk: int
) -> Iterator[list[np.ndarray]]:
    """The view with the segments off in each mask row replaced by ``colour``, ``chunk`` images at a time, so at
    most a chunk of copies is held at once."""
    for start in range(0, len(masks), chunk):
        yield [np.where(row.astype(bool)[labels][..., None], view, colour) for row in masks[start : start + chunk]]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def png_base64(pixels: np.ndarray) -> str:
    return base64.b64encode(png(pixels)).decode("ascii")


def heat_map(view: np.ndarray, labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The view overlaid with each segment's value: red where it raised the class's probability, blue where it
    lowered it, stronger for larger values (scaled to the largest magnitude); segment edges drawn in grey."""
    from skimage.segmentation import find_boundaries

    scale = float(np.abs(values).max()) or 1.0
    per_pixel = (values / scale)[labels]
    strength = (0.65 * np.abs(per_pixel))[..., None]
    colour = np.where((per_pixel >= 0)[..., None], np.array([220, 20, 30]), np.array([30, 60, 230]))
    blended = view.astype(np.float64) * (1 - strength) + colour * strength
    blended[find_boundaries(labels, mode="inner")] = (200, 200, 200)
    return blended.round().clip(0, 255).astype(np.uint8)
