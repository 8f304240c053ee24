"""Remote sensing domain: top-down land cover: fields, water, buildings, roads."""

from __future__ import annotations

import random
from itertools import pairwise

from PIL import Image

from mmneuron_bench.synthetic.drawing import CANVAS, SCALE, canvas, finish, jitter
from mmneuron_bench.synthetic.questions import Question

QUESTIONS = (
    Question("is there water in the image ?", ("yes", "no")),
    Question("what covers most of the image ?", ("fields", "water", "buildings")),
    Question("is there a road in the image ?", ("yes", "no")),
)
FIELD_COLORS = ((90, 130, 50), (120, 150, 60), (150, 130, 70), (180, 165, 95), (70, 110, 45))
WATER = (40, 80, 130)
ROOFS = ((150, 150, 150), (170, 90, 70), (200, 200, 195), (120, 110, 105))


def _fields(rng: random.Random, d) -> None:
    """Cover the whole canvas with a patchwork of striped fields."""
    xs = sorted({0, CANVAS, *(rng.randrange(4, 28) * SCALE for _ in range(rng.randint(1, 3)))})
    for x0, x1 in pairwise(xs):
        ys = sorted({0, CANVAS, *(rng.randrange(4, 28) * SCALE for _ in range(rng.randint(1, 3)))})
        for y0, y1 in pairwise(ys):
            color = jitter(rng, rng.choice(FIELD_COLORS), 12)
            d.rectangle([x0, y0, x1, y1], fill=color)
            stripe = tuple(max(0, c - 25) for c in color)
            step = rng.choice((2, 3)) * SCALE
            if rng.random() < 0.5:
                for x in range(x0, x1, step):
                    d.line([(x, y0), (x, y1)], fill=stripe, width=SCALE // 2)
            else:
                for y in range(y0, y1, step):
                    d.line([(x0, y), (x1, y)], fill=stripe, width=SCALE // 2)


def _region(rng: random.Random, fraction: float) -> list[float]:
    """A box along one edge of the image covering about ``fraction`` of it."""
    extent = 32 * fraction
    edge = rng.randrange(4)
    boxes = (
        [0, 0, extent, 32],
        [32 - extent, 0, 32, 32],
        [0, 0, 32, extent],
        [0, 32 - extent, 32, 32],
    )
    return [v * SCALE for v in boxes[edge]]


def _water(rng: random.Random, d, box: list[float]) -> None:
    x0, y0, x1, y1 = box
    color = jitter(rng, WATER, 15)
    d.rectangle(box, fill=color)
    for _ in range(6):  # an irregular shore
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        r = rng.uniform(2, 5) * SCALE
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)


def _lake(rng: random.Random, d) -> None:
    cx, cy = rng.uniform(8, 24) * SCALE, rng.uniform(8, 24) * SCALE
    rx, ry = rng.uniform(4, 8) * SCALE, rng.uniform(4, 8) * SCALE
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=jitter(rng, WATER, 15))


def _buildings(rng: random.Random, d, box: list[float]) -> None:
    x0, y0, x1, y1 = box
    d.rectangle(box, fill=jitter(rng, (185, 180, 170), 10))
    y = y0 + SCALE
    while y < y1 - 2 * SCALE:
        x = x0 + SCALE
        size = rng.randint(2, 3) * SCALE
        while x < x1 - 2 * SCALE:
            w = rng.randint(2, 3) * SCALE
            d.rectangle(
                [x, y, min(x + w, x1), min(y + size, y1)], fill=jitter(rng, rng.choice(ROOFS), 10)
            )
            x += w + SCALE
        y += size + SCALE


def _road(rng: random.Random, d) -> None:
    """A straight paved road with a centre line, from one edge to the opposite one."""
    a, b = rng.uniform(4, 28) * SCALE, rng.uniform(4, 28) * SCALE
    line = [(0, a), (CANVAS, b)] if rng.random() < 0.5 else [(a, 0), (b, CANVAS)]
    d.line(line, fill=jitter(rng, (55, 55, 60), 10), width=4 * SCALE)
    d.line(line, fill=(230, 230, 210), width=2)


def draw(rng: random.Random, question: int, answer: str) -> Image.Image:
    """The tile for one sample whose ``question`` (index into QUESTIONS) has ``answer``."""
    image, d = canvas((0, 0, 0))
    _fields(rng, d)
    if question == 1:
        main = answer
    else:
        main = rng.choice(("fields", "fields", "buildings"))
    has_water = answer == "yes" if question == 0 else main == "water" or rng.random() < 0.5
    has_road = answer == "yes" if question == 2 else rng.random() < 0.5
    if main == "water":
        _water(rng, d, _region(rng, rng.uniform(0.65, 0.8)))
    elif main == "buildings":
        _buildings(rng, d, _region(rng, rng.uniform(0.65, 0.8)))
    elif rng.random() < 0.5:
        _buildings(rng, d, _region(rng, rng.uniform(0.15, 0.25)))
    if has_water and main != "water":
        _lake(rng, d)
    if has_road:
        _road(rng, d)
    return finish(image, rng, noise=5.0)
