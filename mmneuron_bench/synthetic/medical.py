"""Medical domain: a grayscale cross-sectional scan (body, lungs, spine), maybe with a lesion."""

from __future__ import annotations

import random

from PIL import Image

from mmneuron_bench.synthetic.drawing import SCALE, canvas, finish, gray
from mmneuron_bench.synthetic.questions import Question

QUESTIONS = (
    Question("is there a lesion in the scan ?", ("yes", "no")),
    Question("which side is the lesion on ?", ("left", "right")),
    Question("is the lesion large or small ?", ("large", "small")),
)
RADIUS = {"small": (1.4, 1.9), "large": (3.0, 3.6)}


def _box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [(cx - rx) * SCALE, (cy - ry) * SCALE, (cx + rx) * SCALE, (cy + ry) * SCALE]


def draw(rng: random.Random, question: int, answer: str) -> Image.Image:
    """The scan for one sample whose ``question`` (index into QUESTIONS) has ``answer``."""
    present = answer == "yes" if question == 0 else True
    side = answer if question == 1 else rng.choice(QUESTIONS[1].answers)
    size = answer if question == 2 else rng.choice(QUESTIONS[2].answers)
    image, d = canvas(gray(rng.randint(0, 15)))
    cx, cy = 16 + rng.uniform(-1, 1), 16 + rng.uniform(-1, 1)
    body_rx, body_ry = rng.uniform(13, 15), rng.uniform(10, 13)
    d.ellipse(_box(cx, cy, body_rx, body_ry), fill=gray(rng.randint(95, 125)))
    d.ellipse(_box(cx, cy, body_rx - 1.2, body_ry - 1.2), fill=gray(rng.randint(125, 150)))
    lung_level = rng.randint(35, 60)
    for sign in (-1, 1):
        d.ellipse(
            _box(cx + sign * 6.5, cy - 0.5, 5 + rng.uniform(-0.5, 0.5), body_ry - 3.5),
            fill=gray(lung_level),
        )
    d.ellipse(_box(cx, cy + body_ry - 3.5, 1.6, 1.6), fill=gray(rng.randint(200, 230)))  # spine
    if present:
        r = rng.uniform(*RADIUS[size])
        sign = -1 if side == "left" else 1
        lx = cx + sign * rng.uniform(4.5, 8.5)
        ly = cy + rng.uniform(-(body_ry - 6.5 - r / 2), body_ry - 6.5 - r / 2)
        d.ellipse(_box(lx, ly, r, r), fill=gray(rng.randint(200, 240)))
    return finish(image, rng, noise=7.0, grayscale=True)
