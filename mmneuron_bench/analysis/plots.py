"""PNG figures of the analyses, drawn with matplotlib's object API (Agg, no global state)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mmneuron_bench.formats.atomic import atomic_write

DPI = 110


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def plot_distribution(
    path: Path, component: str, role: str, domains: Sequence[str], counts: torch.Tensor
) -> None:
    """Domain-specific neurons per layer (``counts`` ``[D, L]``): lines, or bars for 1 layer."""
    layers = counts.shape[1]
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    if layers == 1:
        width = 0.8 / len(domains)
        for i, domain in enumerate(domains):
            ax.bar([i * width - 0.4 + width / 2], [int(counts[i, 0])], width, label=domain)
        ax.set_xticks([0])
        ax.set_xlim(-0.6, 0.6)
    else:
        for i, domain in enumerate(domains):
            ax.plot(range(layers), counts[i].tolist(), marker="o", markersize=3, label=domain)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("domain-specific neurons")
    ax.set_title(f"{component} ({role})")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_logit_lens(path: Path, curves: dict[str, dict[str, dict[str, list]]]) -> None:
    """Mean next-token entropy per layer: one panel per task, image and text positions,
    solid without the mask and dashed with it. ``curves[title][condition][kind]`` is a list
    per layer (None where no position of that kind exists)."""
    titles = list(curves)
    columns = min(len(titles), 3)
    rows = math.ceil(len(titles) / columns)
    fig = Figure(figsize=(4.6 * columns, 3.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    styles = {"original": "-", "masked": "--"}
    colors = {"image": "tab:blue", "text": "tab:orange"}
    for ax, title in zip(axes, titles, strict=False):
        for condition, by_kind in curves[title].items():
            for kind, values in by_kind.items():
                ys = [math.nan if v is None else v for v in values]
                ax.plot(
                    range(len(ys)),
                    ys,
                    styles[condition],
                    color=colors[kind],
                    marker="o",
                    markersize=3,
                    label=f"{kind}, {condition}",
                )
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("decoder layer")
        ax.set_ylabel("mean entropy (nats)")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.legend(fontsize="small")
    for ax in axes[len(titles) :]:
        ax.set_visible(False)
    _save(fig, path)
