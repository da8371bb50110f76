"""Decoding image bytes and files into RGB PIL images.

Training, evaluation and serving all decode through :func:`open_rgb`, so a
served model sees pixels decoded exactly as during evaluation.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image

# Pillow warns at MAX_IMAGE_PIXELS and raises at twice that; any image past
# the warning threshold is treated as an attack or a mistake, not decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})


class ImageDecodeError(ValueError):
    """The input is not a complete, decodable image of acceptable size."""


def open_rgb(source: str | Path | bytes | BinaryIO, draft_size: int | None = None) -> Image.Image:
    """Decode ``source`` fully into an RGB image.

    ``draft_size`` lets JPEG decoding scale down by powers of two while
    keeping both sides at least that large: a large photo decodes several
    times faster and the later resize sees the same content.
    Raises :class:`ImageDecodeError` for anything that is not a whole image.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageDecodeError(f"image is too large ({width}x{height} pixels)")
                if draft_size is not None and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
                return img.convert("RGB")
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image is too large: {exc}") from exc
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError or SyntaxError.
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from exc
