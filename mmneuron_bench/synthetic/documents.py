"""Documents domain: a page of printed text: lines of words, maybe a title, one or two columns."""

from __future__ import annotations

import random

from PIL import Image

from mmneuron_bench.synthetic.drawing import SCALE, canvas, finish, jitter
from mmneuron_bench.synthetic.questions import Question

QUESTIONS = (
    Question("how many lines of text are there ?", ("1", "2", "3", "4")),
    Question("is there a title on the page ?", ("yes", "no")),
    Question("how many columns of text are there ?", ("1", "2")),
)
INKS = ((20, 20, 20), (25, 30, 80), (50, 45, 40))
LINE_HEIGHT = 3.0
TITLE_HEIGHT = 4.0


def _words(
    rng: random.Random, d, x0: float, x1: float, y: float, height: float, ink, bold: bool = False
) -> None:
    """One line of text from ``x0`` to about ``x1``: words of glyph strokes, ragged right."""
    stroke = 3 if bold else 2
    end = x1 - rng.uniform(0, (x1 - x0) * 0.2)
    x = x0
    while x < end - 1.5:
        word_end = min(end, x + rng.uniform(2.5, 6.5))
        gx = x * SCALE
        while gx < word_end * SCALE - 2:  # glyphs: strokes of x-height, some with ascenders
            top = y - (height * 0.35 if rng.random() < 0.3 else 0)
            d.rectangle([gx, top * SCALE, gx + stroke, (y + height) * SCALE], fill=ink)
            d.rectangle([gx, y * SCALE, gx + 3, (y + 0.4) * SCALE], fill=ink)
            gx += 4
        x = word_end + 1.2


def draw(rng: random.Random, question: int, answer: str) -> Image.Image:
    """The page for one sample whose ``question`` (index into QUESTIONS) has ``answer``."""
    if question == 0:
        lines, title, columns = int(answer), False, rng.randint(1, 2)
    else:
        lines = rng.randint(2, 4)
        title = answer == "yes" if question == 1 else rng.random() < 0.5
        columns = int(answer) if question == 2 else rng.randint(1, 2)
    image, d = canvas(jitter(rng, (242, 238, 228), 10))
    ink = jitter(rng, rng.choice(INKS), 10)
    left, right = rng.uniform(2, 4), 32 - rng.uniform(2, 4)
    spacing = rng.uniform(5.5, 6.5)
    used = (TITLE_HEIGHT + 2 if title else 0) + (lines - 1) * spacing + LINE_HEIGHT
    y = rng.uniform(1.5, 32 - 1.5 - used)
    if title:
        width = rng.uniform(10, 18)
        start = (left + right - width) / 2
        _words(rng, d, start, start + width, y, TITLE_HEIGHT, ink, bold=True)
        y += TITLE_HEIGHT + 2
    middle = (left + right) / 2
    spans = [(left, right)] if columns == 1 else [(left, middle - 2), (middle + 2, right)]
    for _ in range(lines):
        for x0, x1 in spans:
            _words(rng, d, x0, x1, y, LINE_HEIGHT, ink)
        y += spacing
    return finish(image, rng, noise=3.0)
