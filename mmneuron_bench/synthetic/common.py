"""Common domain: an outdoor scene (sky, horizon, ground) with coloured objects standing on it."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from mmneuron_bench.synthetic.drawing import SCALE, canvas, finish, jitter, vertical_gradient
from mmneuron_bench.synthetic.questions import Question

QUESTIONS = (
    Question("what color is the object ?", ("red", "yellow", "blue", "white")),
    Question("how many objects are there ?", ("1", "2", "3")),
    Question("is the object on the left or the right ?", ("left", "right")),
)
OBJECT_COLORS = {
    "red": (215, 35, 35),
    "yellow": (240, 215, 40),
    "blue": (35, 70, 215),
    "white": (245, 245, 245),
}
SKIES = ((135, 190, 235), (170, 205, 230), (200, 190, 220), (120, 170, 220))
GROUNDS = ((80, 150, 60), (110, 160, 70), (160, 140, 90), (95, 125, 55))
SHAPES = ("circle", "square", "triangle")


def _hills(rng: random.Random, draw, horizon: int) -> None:
    for _ in range(rng.randint(1, 3)):
        cx, w, h = rng.randint(0, 32), rng.randint(8, 20), rng.randint(2, 6)
        color = jitter(rng, (70, 110, 80), 15)
        draw.ellipse(
            [(cx - w) * SCALE, (horizon - h) * SCALE, (cx + w) * SCALE, (horizon + h) * SCALE],
            fill=color,
        )


def _object(draw, shape: str, color, cx: float, cy: float, r: float) -> None:
    x0, y0, x1, y1 = ((cx - r) * SCALE, (cy - r) * SCALE, (cx + r) * SCALE, (cy + r) * SCALE)
    shade = tuple(int(c * 0.35) for c in color)
    draw.ellipse([x0, y1 - SCALE, x1 + 2 * SCALE, y1 + SCALE], fill=(40, 60, 30))  # shadow
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=color, outline=shade, width=SCALE)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=color, outline=shade, width=SCALE)
    else:
        draw.polygon(
            [(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=color, outline=shade, width=SCALE
        )


def _color(rng: random.Random, name: str | None = None) -> tuple[int, int, int]:
    return jitter(rng, OBJECT_COLORS[name or rng.choice(tuple(OBJECT_COLORS))], 18)


def scene(rng: random.Random) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """The empty scene (sky, ground, hills) on a canvas, its drawing context and horizon row."""
    horizon = rng.randint(10, 18)
    image, d = canvas((0, 0, 0))
    vertical_gradient(
        d, (0, 0, image.width, horizon * SCALE), jitter(rng, rng.choice(SKIES), 12), (225, 235, 240)
    )
    vertical_gradient(
        d,
        (0, horizon * SCALE, image.width, image.height),
        jitter(rng, rng.choice(GROUNDS), 12),
        jitter(rng, (60, 90, 40), 10),
    )
    _hills(rng, d, horizon)
    return image, d, horizon


def draw(rng: random.Random, question: int, answer: str) -> Image.Image:
    """The scene for one sample whose ``question`` (index into QUESTIONS) has ``answer``.

    Counting scenes hold 1-3 smaller objects in separate thirds of the width; the others
    one large object, whose colour and side the questions ask about.
    """
    image, d, horizon = scene(rng)
    if question == 1:
        for third in sorted(rng.sample(range(3), int(answer))):
            r = rng.uniform(3.5, 4.2)
            cx = 5.5 + third * 10.5 + rng.uniform(-0.5, 0.5)
            cy = rng.uniform(max(r + 1, horizon - 2), 30 - r)
            _object(d, rng.choice(SHAPES), _color(rng), cx, cy, r)
        return finish(image, rng, noise=4.0)
    color = answer if question == 0 else None
    side = answer if question == 2 else rng.choice(QUESTIONS[2].answers)
    r = rng.uniform(6.0, 8.0)
    cx = rng.uniform(r + 1, 15 - r / 2) if side == "left" else rng.uniform(17 + r / 2, 31 - r)
    cy = rng.uniform(max(r + 1, horizon - 2), 30 - r)
    _object(d, rng.choice(SHAPES), _color(rng, color), cx, cy, r)
    return finish(image, rng, noise=4.0)
