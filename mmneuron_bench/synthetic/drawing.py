"""Drawing helpers shared by the synthetic domains: a 4x canvas, colour jitter, sensor noise.

Scenes are drawn at ``SCALE`` times the output size and reduced with a box filter, so edges
are anti-aliased like a photograph's instead of pixel-stepped; noise is added at output size.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SCALE = 4
CANVAS = IMAGE_SIZE * SCALE

Color = tuple[int, int, int]


def canvas(color: Color) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A blank RGB canvas of ``CANVAS`` pixels and its drawing context."""
    image = Image.new("RGB", (CANVAS, CANVAS), color)
    return image, ImageDraw.Draw(image)


def jitter(rng: random.Random, color: Color, amount: int) -> Color:
    """``color`` with each channel moved by up to ``amount`` (clipped to 0..255)."""
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in color)


def gray(level: int) -> Color:
    return (level, level, level)


def vertical_gradient(draw: ImageDraw.ImageDraw, box: tuple, top: Color, bottom: Color) -> None:
    """Fill ``box`` (x0, y0, x1, y1) with a top-to-bottom colour gradient."""
    x0, y0, x1, y1 = box
    for y in range(y0, y1):
        t = (y - y0) / max(1, y1 - y0 - 1)
        color = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(x0, y), (x1 - 1, y)], fill=color)


def finish(
    image: Image.Image, rng: random.Random, noise: float, grayscale: bool = False
) -> Image.Image:
    """Reduce the canvas to ``IMAGE_SIZE`` and add Gaussian noise of std ``noise``.

    A ``grayscale`` scene gets the same noise in every channel, so it stays gray.
    """
    small = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float64)
    shape = (*pixels.shape[:2], 1) if grayscale else pixels.shape
    pixels = pixels + np.random.default_rng(rng.getrandbits(64)).normal(0.0, noise, shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
