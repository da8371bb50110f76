"""Decoding image bytes and files into upright RGB PIL images.

Training, evaluation and serving all decode through :func:`open_rgb`, so a
served model sees pixels decoded exactly as during evaluation. Phone photos
store their pixels as the sensor saw them and an EXIF orientation tag that
says how to turn them; :func:`open_rgb` applies it, so every stage sees the
picture the way an image viewer shows it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from dogbreed.errors import DogbreedError

# Pillow warns at MAX_IMAGE_PIXELS and raises at twice that; any image past
# the warning threshold is treated as an attack or a mistake, not decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})


class ImageDecodeError(DogbreedError, ValueError):
    """The input is not a complete, decodable image of acceptable size."""


class ImageTooLarge(ImageDecodeError):
    """An image, but more pixels than may be decoded: a server answers 413 for it, not 400."""


@contextmanager
def _opened(source: str | Path | bytes | BinaryIO) -> Iterator[Image.Image]:
    """The image, opened lazily (header only) and refused past :data:`MAX_PIXELS`; Pillow's errors as
    ImageDecodeError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageTooLarge(f"image is too large ({width}x{height} pixels)")
                yield img
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image is too large: {exc}") from exc
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError or SyntaxError.
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from exc


def image_size(source: str | Path | bytes | BinaryIO) -> tuple[int, int]:
    """Width and height from the image's header alone, without decoding its pixels.

    Raises :class:`ImageDecodeError` for what is not an image, or one larger than :data:`MAX_PIXELS`.
    """
    with _opened(source) as img:
        return img.size


def open_rgb(
    source: str | Path | bytes | BinaryIO, draft_size: int | None = None, max_decoded_pixels: int | None = None
) -> Image.Image:
    """Decode ``source`` fully into an upright RGB image (EXIF orientation applied).

    ``draft_size`` lets JPEG decoding scale down by powers of two while
    keeping both sides at least that large: a large photo decodes several
    times faster and the later resize sees the same content.
    ``max_decoded_pixels`` refuses, before decoding, an image that would
    decode to more pixels than that after the JPEG scaling: a PNG of a few
    kilobytes can decode to hundreds of megabytes.
    Raises :class:`ImageDecodeError` for anything that is not a whole image.
    """
    with _opened(source) as img:
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        width, height = img.size
        if max_decoded_pixels is not None and width * height > max_decoded_pixels:
            raise ImageTooLarge(
                f"image is too large to decode here ({width}x{height} pixels; at most {max_decoded_pixels} "
                "pixels decoded per image, or send a JPEG, which decodes scaled down)"
            )
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return img.convert("RGB")
