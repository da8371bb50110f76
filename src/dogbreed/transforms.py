"""Image preprocessing shared by training, evaluation and serving.

Serving calls :func:`eval_transform` with the values stored in the model's
metadata, so a served model sees exactly what its evaluation saw.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's classification references resize to 256 before a 224 crop.
RESIZE_RATIO = 256 / 224


def resize_size(image_size: int) -> int:
    return int(round(image_size * RESIZE_RATIO))


def eval_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> transforms.Compose:
    """Resize, centre-crop, to tensor, normalise: a PIL RGB image to a CHW float tensor."""
    return transforms.Compose(
        [
            transforms.Resize(resize_size(image_size)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(list(mean), list(std)),
        ]
    )


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
