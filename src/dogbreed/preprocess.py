"""Evaluation preprocessing with Pillow and NumPy alone: the one source for evaluation and serving.

It is torchvision's ``Resize(resize_size(n))``, ``CenterCrop(n)``,
``ToTensor()`` and ``Normalize(mean, std)`` for PIL images, step for step
(the same Pillow resize call, the same crop arithmetic, float32 throughout),
so a model sees the same numbers whether torch is installed or not; a test
holds the two equal within 1e-6. Training's augmentation stays in
:mod:`dogbreed.training.transforms`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's classification references resize to 256 before a 224 crop.
RESIZE_RATIO = 256 / 224


def resize_size(image_size: int) -> int:
    return round(image_size * RESIZE_RATIO)


def resize_shorter_side(
    image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> Image.Image:
    """Scale so the shorter side is ``size``, keeping the aspect ratio as torchvision computes it."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, resample)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` square; an image smaller than that is padded with black, as torchvision does."""
    width, height = image.size
    if width < size or height < size:
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        padded.paste(image, ((max(width, size) - width) // 2, (max(height, size) - height) // 2))
        image, (width, height) = padded, padded.size
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def eval_array(
    image: Image.Image, image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """An RGB PIL image as the model's input: a float32 array of shape (3, image_size, image_size)."""
    cropped = center_crop(resize_shorter_side(image, resize_size(image_size)), image_size)
    pixels = np.asarray(cropped, dtype=np.uint8).astype(np.float32) / np.float32(255)
    chw = pixels.transpose(2, 0, 1)
    mean_array = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_array = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((chw - mean_array) / std_array)
