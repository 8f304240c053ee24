"""Driving domain: the road ahead from the driver's seat: three lanes, maybe a car, a light."""

from __future__ import annotations

import random

from PIL import Image

from mmneuron_bench.synthetic.drawing import SCALE, canvas, finish, jitter, vertical_gradient
from mmneuron_bench.synthetic.questions import Question

QUESTIONS = (
    Question("is there a car on the road ?", ("yes", "no")),
    Question("which lane is the car in ?", ("left", "middle", "right")),
    Question("what color is the traffic light ?", ("red", "green")),
)
LANES = ("left", "middle", "right")
CAR_COLORS = ((200, 30, 30), (30, 60, 190), (235, 235, 235), (30, 30, 30), (220, 190, 30))
LAMPS = {"red": (255, 40, 30), "green": (40, 255, 90)}


def _road_x(x_bottom: float, vanish_x: float, horizon: float, y: float) -> float:
    """x of a road line that runs from ``x_bottom`` at the bottom to the vanishing point."""
    t = (y - horizon) / (32 - horizon)
    return vanish_x + (x_bottom - vanish_x) * t


def _car(rng: random.Random, d, lane: int, vanish_x: float, horizon: float) -> None:
    y = horizon + (32 - horizon) * rng.uniform(0.45, 0.72)  # bottom of the car; all of it shows
    edges = [_road_x(x, vanish_x, horizon, y) for x in (-10, 7.3, 24.7, 42)]
    left, right = edges[lane], edges[lane + 1]
    w = (right - left) * rng.uniform(0.7, 0.8)
    h = w * 0.7
    x0 = (left + right - w) / 2
    color = jitter(rng, rng.choice(CAR_COLORS), 15)
    d.rectangle([x0 * SCALE, (y - h) * SCALE, (x0 + w) * SCALE, y * SCALE], fill=color)
    d.rectangle(
        [
            (x0 + w * 0.15) * SCALE,
            (y - h * 0.95) * SCALE,
            (x0 + w * 0.85) * SCALE,
            (y - h * 0.55) * SCALE,
        ],
        fill=(60, 70, 80),
    )  # rear window
    for wx in (x0, x0 + w * 0.75):
        d.rectangle(
            [wx * SCALE, y * SCALE, (wx + w * 0.25) * SCALE, (y + h * 0.15) * SCALE],
            fill=(15, 15, 15),
        )


def _traffic_light(rng: random.Random, d, color: str, horizon: float) -> None:
    x = rng.choice((rng.uniform(2, 6), rng.uniform(26, 30)))
    top = rng.uniform(1, max(1.5, horizon - 10))
    d.rectangle(
        [(x - 0.3) * SCALE, (top + 6) * SCALE, (x + 0.3) * SCALE, (horizon + 3) * SCALE],
        fill=(60, 60, 60),
    )  # pole
    d.rectangle(
        [(x - 2) * SCALE, top * SCALE, (x + 2) * SCALE, (top + 7) * SCALE], fill=(25, 25, 25)
    )
    lamp_y = top + (1.9 if color == "red" else 5.1)
    d.ellipse(
        [(x - 1.5) * SCALE, (lamp_y - 1.5) * SCALE, (x + 1.5) * SCALE, (lamp_y + 1.5) * SCALE],
        fill=LAMPS[color],
    )


def draw(rng: random.Random, question: int, answer: str) -> Image.Image:
    """The view for one sample whose ``question`` (index into QUESTIONS) has ``answer``."""
    has_car = answer == "yes" if question == 0 else question == 1 or rng.random() < 0.5
    lane = LANES.index(answer) if question == 1 else rng.randrange(3)
    light = answer if question == 2 else rng.choice((None, "red", "green"))
    horizon = rng.uniform(10, 13)
    vanish_x = 16 + rng.uniform(-2, 2)
    image, d = canvas((0, 0, 0))
    h = round(horizon * SCALE)
    vertical_gradient(d, (0, 0, image.width, h), jitter(rng, (150, 180, 215), 20), (215, 220, 225))
    vertical_gradient(
        d,
        (0, h, image.width, image.height),
        jitter(rng, (105, 130, 80), 15),
        jitter(rng, (85, 115, 60), 15),
    )
    corners = [(vanish_x - 0.5, horizon), (vanish_x + 0.5, horizon), (42, 32), (-10, 32)]
    d.polygon([(x * SCALE, y * SCALE) for x, y in corners], fill=jitter(rng, (95, 95, 100), 12))
    for x_bottom in (7.3, 24.7):  # dashed lane dividers
        y = horizon + 1 + rng.uniform(0, 1.5)
        while y < 32:
            y2 = min(32.0, y + 0.9 + (y - horizon) * 0.25)
            d.line(
                [
                    (_road_x(x_bottom, vanish_x, horizon, y) * SCALE, y * SCALE),
                    (_road_x(x_bottom, vanish_x, horizon, y2) * SCALE, y2 * SCALE),
                ],
                fill=(235, 235, 220),
                width=max(1, round((y - horizon) / 6 * SCALE / 2)),
            )
            y = y2 + 0.6 + (y - horizon) * 0.2
    for x_bottom in (-10, 42):  # road edges
        d.line(
            [(vanish_x * SCALE, horizon * SCALE), (x_bottom * SCALE, 32 * SCALE)],
            fill=(230, 230, 230),
            width=3,
        )
    if has_car:
        _car(rng, d, lane, vanish_x, horizon)
    if light is not None:
        _traffic_light(rng, d, light, horizon)
    return finish(image, rng, noise=4.0)
