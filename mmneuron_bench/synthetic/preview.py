"""A contact sheet of synthetic samples: one row per domain, to see what the domains look like."""

from __future__ import annotations

from PIL import Image

from mmneuron_bench.synthetic.drawing import IMAGE_SIZE
from mmneuron_bench.synthetic.generate import DOMAINS, generate


def contact_sheet(
    domains: tuple[str, ...] = tuple(DOMAINS), split: str = "eval", n: int = 8, zoom: int = 3
) -> Image.Image:
    """The first ``n`` samples of each domain's ``split``, enlarged ``zoom`` times, 2 px apart."""
    cell = IMAGE_SIZE * zoom + 2
    sheet = Image.new("RGB", (n * cell - 2, len(domains) * cell - 2), "white")
    for row, domain in enumerate(domains):
        for col in range(n):
            image = generate(domain, split, col).image
            big = image.resize((IMAGE_SIZE * zoom,) * 2, Image.Resampling.NEAREST)
            sheet.paste(big, (col * cell, row * cell))
    return sheet
