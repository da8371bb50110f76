"""Evaluation preprocessing without torch equals torchvision's, on the sample set and real photos."""

from __future__ import annotations

import pickle
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageOps
from torchvision import transforms as T

from dogbreed.preprocess import IMAGENET_MEAN, IMAGENET_STD, eval_array, resize_size
from dogbreed.training.transforms import eval_transform
from tests.conftest import SAMPLE_DATA

# A real photo that ships with matplotlib (Grace Hopper, 512x600 JPEG).
PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _photos() -> list[Image.Image]:
    """The photo as cameras and users send it: portrait, landscape strips, tiny, turned, re-encoded small."""
    photo = Image.open(PHOTO).convert("RGB")
    return [
        photo,
        photo.crop((0, 0, 512, 201)),
        photo.crop((37, 0, 140, 600)),
        photo.resize((19, 31)),
        photo.transpose(Image.Transpose.ROTATE_90),
        ImageOps.grayscale(photo).convert("RGB"),
        photo.resize((1500, 1757), Image.Resampling.LANCZOS),
    ]


def _reference(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> T.Compose:
    return T.Compose(
        [T.Resize(resize_size(image_size)), T.CenterCrop(image_size), T.ToTensor(), T.Normalize(list(mean), list(std))]
    )


@pytest.mark.parametrize("image_size", [32, 64, 224, 299])
def test_eval_array_equals_torchvision(image_size):
    images = [Image.open(p).convert("RGB") for p in sorted(SAMPLE_DATA.rglob("*.jpg"))[::4]] + _photos()
    reference = _reference(image_size)
    for image in images:
        ours = eval_array(image, image_size)
        theirs = reference(image).numpy()
        assert ours.dtype == np.float32 and ours.shape == theirs.shape == (3, image_size, image_size)
        assert np.abs(ours - theirs).max() <= 1e-6, image.size


def test_custom_statistics_and_the_torch_wrapper():
    image = _photos()[1]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    expected = _reference(64, mean, std)(image)
    transform = eval_transform(64, mean, std)
    assert np.abs(transform(image).numpy() - expected.numpy()).max() <= 1e-6
    assert pickle.loads(pickle.dumps(transform)) == transform  # DataLoader workers may pickle it
