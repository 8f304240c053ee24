"""The report gathers a grid and the analyses' outputs into HTML (parsed here, images decoded)
and markdown."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mmneuron_bench.analysis.deviation import DeviationRow, write_deviation
from mmneuron_bench.analysis.distribution import write_distribution
from mmneuron_bench.analysis.logit_lens import LensCurves, LensResult, write_logit_lens
from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.models.components import ComponentInfo

MODEL = {"adapter": "llava", "name_or_path": "tiny-llava", "fingerprint": "f" * 64}
TASKS = {"vqa_medical": "medical", "drive_qa": "driving"}


class Page(HTMLParser):
    """Tables (caption, header, rows), image sources, and every src/href of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "table":
            self.tables.append({"caption": "", "header": [], "rows": []})
        elif tag == "caption":
            self._in_caption = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "caption":
            self._in_caption = False
        elif tag in ("td", "th"):
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            table = self.tables[-1]
            if table["header"]:
                table["rows"].append(self._row)
            else:
                table["header"] = self._row

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_caption:
            self.tables[-1]["caption"] += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def table_with(page: Page, caption_part: str) -> dict:
    [table] = [t for t in page.tables if caption_part in t["caption"]]
    return table


def write_grid(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    values = {"none": 0.75, "llm": 0.625, "all": 0.5}
    cells = [
        {
            "module_set": s,
            "mask": m,
            "task": t,
            "domain": d,
            "metric": "exact_match",
            "value": v - (0.125 if m == "random" and t == "drive_qa" else 0.0),
        }
        for s, v in values.items()
        for m in ("dape", "random")
        for t, d in TASKS.items()
    ]
    cells[-1]["value"] = None  # a metric lmms-eval could not compute
    grid = {
        "format": "mmneuron-grid/1",
        "model": MODEL,
        "mask": {"path": "tiny.mask.safetensors", "sha256": "a" * 64},
        "baseline": "random",
        "module_sets": list(values),
        "tasks": {t: {"domain": d, "metric": "exact_match"} for t, d in TASKS.items()},
        "cells": cells,
    }
    (folder / "grid.json").write_text(json.dumps(grid))


def write_analyses(folder: Path, tmp_path: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    infos = {
        "llm": ComponentInfo("llm", "llm", 2, 8),
        "proj": ComponentInfo("proj", "connector", 1, 4),
    }
    masks = {
        (d, c): torch.zeros(i.layers, i.width, dtype=torch.bool)
        for d in TASKS.values()
        for c, i in infos.items()
    }
    masks[("medical", "llm")][1, :3] = True
    masks[("driving", "proj")][0, 0] = True
    mask = NeuronMask(list(TASKS.values()), infos, MODEL, "dape", {}, None, masks)
    mask_path = tmp_path / "tiny.mask.safetensors"
    mask.save(mask_path)
    write_distribution(mask, mask_path, folder)
    header = {"model": MODEL, "mask": {"path": str(mask_path), "sha256": "b" * 64}, "seeds": 2}
    rows = [
        DeviationRow("vqa_medical", "medical", "none", 4, 0, 0.0, [0.0, 0.0]),
        DeviationRow("vqa_medical", "medical", "llm", 4, 3, 12.5, [2.0, 4.0]),
    ]
    write_deviation(rows, {**header, "module_sets": ["none", "llm"], "limit": 4}, folder)
    curves = {"original": LensCurves(2), "masked": LensCurves(2)}
    roles = torch.tensor([[1, 2, 2]])  # text, image, image
    curves["original"].add(torch.tensor([[[1.0, 2.0, 4.0]], [[0.5, 1.0, 3.0]]]), roles)
    curves["masked"].add(torch.tensor([[[1.5, 2.0, 5.0]], [[0.5, 2.0, 3.0]]]), roles)
    lens = [LensResult("vqa_medical", "medical", 1, curves)]
    write_logit_lens(lens, {**header, "module_set": "all", "chunk_size": 8, "limit": 1}, folder)


def run_cli(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), list(args))


def test_report_embeds_every_table_and_figure(tmp_path):
    root = tmp_path / "results"
    write_grid(root / "grid")
    write_analyses(root / "analysis", tmp_path)
    result = run_cli("report", str(root))
    assert result.exit_code == 0, result.output
    assert f"wrote {root / 'report.html'}" in result.stdout
    page = parse(root / "report.html")

    grid = table_with(page, "metric value")
    assert grid["header"] == [
        "module set",
        "mask",
        "vqa_medical (medical, exact_match)",
        "drive_qa (driving, exact_match)",
    ]
    assert ["llm", "dape", "0.6250", "0.6250"] in grid["rows"]
    assert ["llm", "random", "0.6250", "0.5000"] in grid["rows"]
    assert grid["rows"][-1] == ["all", "random", "0.5000", "-"]
    assert len(grid["rows"]) == 6

    dist = table_with(page, "selected neurons")
    assert dist["header"] == ["domain", "llm (llm)", "proj (connector)"]
    assert dist["rows"] == [
        ["medical", "3", "0"],
        ["driving", "0", "1"],
        ["any domain", "3", "1"],
        ["neurons", "16", "4"],
    ]

    deviation = table_with(page, "deviation of the last hidden states")
    assert deviation["header"] == ["module set", "neurons", "mask", "random mean ± std"]
    assert deviation["rows"][1] == ["llm", "3", "12.500", "3.000 ± 1.000"]
    assert any("||H'_s - H_s||_2" in text for text in page.text)

    lens = table_with(page, "vqa_medical, domain medical")
    assert lens["header"] == [
        "layer",
        "image, original",
        "text, original",
        "image, masked",
        "text, masked",
    ]
    assert lens["rows"][0] == ["0", "3.0000", "1.0000", "3.5000", "1.5000"]

    # Three figures (two distribution components, the lens), all embedded and decodable.
    assert len(page.images) == 3
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True))) as img:
            img.load()
            assert img.format == "PNG" and img.width > 100
    assert all(link.startswith("data:") for link in page.links)  # self-contained
    assert "Not found" not in page.text


def test_markdown_summary_links_figures_that_exist(tmp_path):
    root = tmp_path / "results"
    write_analyses(root / "analysis", tmp_path)
    out = tmp_path / "shared"
    result = run_cli("report", str(root), "--output", str(out))
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "**vqa\\_medical (domain medical): deviation" in text
    assert "| module set | neurons | mask | random mean ± std |" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(Path(link).name for link in links) == [
        "distribution_llm.png",
        "distribution_proj.png",
        "logit_lens.png",
    ]
    assert all((out / link).is_file() for link in links)
    assert "## Not found" in text and "grid" in text.split("## Not found")[1]
    assert not (root / "report.html").exists() and (out / "report.html").is_file()


def test_a_grid_alone_says_what_is_missing(tmp_path):
    write_grid(tmp_path)
    (tmp_path / "grid.json").rename(tmp_path / "unused.json")
    rows = json.loads((tmp_path / "unused.json").read_text())["cells"]
    lines = ["module_set,mask,task,domain,metric,value"]
    lines += [
        ",".join(str(r[k] if r[k] is not None else "") for k in lines[0].split(",")) for r in rows
    ]
    (tmp_path / "grid.csv").write_text("\n".join(lines) + "\n")
    result = run_cli("report", str(tmp_path))
    assert result.exit_code == 0, result.output
    page = parse(tmp_path / "report.html")
    assert ["llm", "random", "0.6250", "0.5000"] in table_with(page, "metric value")["rows"]
    assert ["all", "random", "0.5000", "-"] in table_with(page, "metric value")["rows"]
    missing = " ".join(page.text).split("Not found")[1]
    for name in ("distribution.json", "deviation.json", "logit_lens.json"):
        assert name in missing
    assert page.images == []


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "found no grid.json, grid.csv, distribution.json"),
        ({"format": "other/1"}, "not a mmneuron-grid/1 file"),
        ({"format": "mmneuron-grid/1", "model": MODEL}, "malformed (KeyError: 'cells')"),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path, content, message):
    if content is not None:
        (tmp_path / "grid.json").write_text(json.dumps(content))
    result = run_cli("report", str(tmp_path))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "report.md").exists()
