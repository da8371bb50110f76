"""Image preprocessing for torch: training's augmentation, and evaluation as tensors.

Evaluation is :func:`dogbreed.preprocess.eval_array` (Pillow and NumPy, no
torch) wrapped as a tensor, so training's evaluation and serving share one
source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision import transforms

from dogbreed.preprocess import IMAGENET_MEAN, IMAGENET_STD, eval_array, resize_size

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "resize_size", "train_transform"]


@dataclass(frozen=True)
class EvalTransform:
    """A PIL RGB image to a CHW float tensor; a class, not a closure, so DataLoader workers can pickle it."""

    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(eval_array(image, self.image_size, self.mean, self.std))


def eval_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> EvalTransform:
    """Resize, centre-crop, scale, normalise: a PIL RGB image to a CHW float tensor."""
    return EvalTransform(image_size, tuple(mean), tuple(std))


def train_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> transforms.Compose:
    """Light augmentation for transfer learning: random resized crop and flip."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(list(mean), list(std)),
        ]
    )
