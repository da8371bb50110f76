"""Generate the bundled sample dataset in the dogImages layout.

Four synthetic "breeds", each a shape of its own colour on a noisy
background, so that even a randomly initialised network learns them in a few
epochs. The output is deterministic: the same seed gives byte-identical JPEG
files, and a test checks the committed copy against a fresh run. With
``--masks DIR`` it also writes each image's shape mask (a PNG, white on the
shape) under the same relative path, which the explanation tests score
attributions against.

    python local_data/make_sample.py [--out local_data/sample] [--seed 0] [--masks DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
COUNTS = {"train": 40, "valid": 10, "test": 10}

# folder name -> (base colour, shape)
CLASSES = {
    "001.Crimson_disc": ((200, 30, 40), "disc"),
    "002.Emerald_square": ((30, 170, 60), "square"),
    "003.Cobalt_triangle": ((30, 60, 210), "triangle"),
    "004.Amber_stripes": ((235, 170, 20), "stripes"),
}


def _jitter(colour: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def draw_sample(colour: tuple[int, int, int], shape: str, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """One sample and its shape's mask (mode L, 255 on the shape); the mask draws nothing from ``rng``."""
    grey = rng.randint(90, 170)
    image = Image.new("RGB", (SIZE, SIZE), _jitter((grey, grey, grey), rng, 25))
    mask = Image.new("L", (SIZE, SIZE), 0)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(40):  # background clutter in neutral tones
        x, y = rng.randrange(SIZE), rng.randrange(SIZE)
        shade = rng.randint(60, 200)
        draw.point((x, y), fill=(shade, shade, shade))
    fill = _jitter(colour, rng, 30)
    radius = rng.randint(14, 24)
    cx, cy = rng.randint(radius, SIZE - radius), rng.randint(radius, SIZE - radius)
    for canvas, ink in ((draw, fill), (mask_draw, 255)):
        if shape == "disc":
            canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=ink)
        elif shape == "square":
            canvas.rectangle((cx - radius, cy - radius, cx + radius, cy + radius), fill=ink)
    if shape == "triangle":
        angle = rng.uniform(0, 2 * math.pi)
        points = [
            (cx + radius * math.cos(angle + k * 2 * math.pi / 3), cy + radius * math.sin(angle + k * 2 * math.pi / 3))
            for k in range(3)
        ]
        draw.polygon(points, fill=fill)
        mask_draw.polygon(points, fill=255)
    elif shape == "stripes":  # across the whole image
        width = rng.randint(4, 7)
        offset = rng.randrange(2 * width)
        for x in range(-SIZE, 2 * SIZE, 2 * width):
            draw.line((x + offset, 0, x + offset + SIZE // 2, SIZE), fill=fill, width=width)
            mask_draw.line((x + offset, 0, x + offset + SIZE // 2, SIZE), fill=255, width=width)
    return image, mask


def generate(out: Path, seed: int = 0, masks: Path | None = None) -> list[Path]:
    """Write the dataset under ``out`` (and the masks under ``masks``), replacing what is there; returns the
    images written."""
    for folder in (out, masks):
        if folder is not None and folder.exists():
            shutil.rmtree(folder)
    written = []
    for split, count in COUNTS.items():
        for index, (folder, (colour, shape)) in enumerate(CLASSES.items()):
            rng = random.Random(f"{seed}-{split}-{index}")
            class_dir = out / split / folder
            class_dir.mkdir(parents=True)
            name = folder.split(".", 1)[1]
            for n in range(1, count + 1):
                path = class_dir / f"{name}_{n:05d}.jpg"
                image, mask = draw_sample(colour, shape, rng)
                image.save(path, format="JPEG", quality=90)
                written.append(path)
                if masks is not None:
                    mask_path = masks / path.relative_to(out).with_suffix(".png")
                    mask_path.parent.mkdir(parents=True, exist_ok=True)
                    mask.save(mask_path, format="PNG")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--masks", type=Path, default=None, help="also write each image's shape mask here")
    args = parser.parse_args()
    files = generate(args.out, args.seed, args.masks)
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} images ({total / 1024:.0f} KiB) to {args.out}")


if __name__ == "__main__":
    main()
