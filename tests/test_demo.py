"""`mmneuron-bench demo --quick`: the whole study on the shipped miniature model, offline."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.cli.commands.demo import DOMAINS
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats

pytestmark = pytest.mark.slow  # installs packages, runs subprocesses or the demo


def test_quick_demo_writes_every_output_and_the_report(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        build_cli(), ["demo", "--quick", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"report: {(out / 'report.html').resolve()}" in result.stdout
    words = " ".join(result.stdout.split())  # titles wrap to their table's width
    assert "Accuracy with nothing off, and its change with the domain's neurons off" in words

    stats = ActivationStats.load(out / "mini.stats.safetensors")
    assert stats.domains == list(DOMAINS)
    assert all(count == 12 for count in stats.samples.values())
    mask = NeuronMask.load(out / "mini.mask.safetensors")
    assert mask.method == "dape" and mask.domains == list(DOMAINS)

    grid = json.loads((out / "grid" / "grid.json").read_text())
    tasks = {f"mmneuron_synth_{d}_eval" for d in DOMAINS}
    assert set(grid["tasks"]) == tasks
    assert {t: grid["tasks"][t]["domain"] for t in tasks} == {
        f"mmneuron_synth_{d}_eval": d for d in DOMAINS
    }
    rows = {(c["module_set"], c["mask"]) for c in grid["cells"]}
    assert rows == {(s, "dape") for s in ("none", "vision", "connector", "llm", "all")} | {
        (s, "random") for s in ("vision", "connector", "llm", "all")
    }
    assert len(grid["cells"]) == len(rows) * len(tasks)
    # The shipped model answers far above chance with nothing switched off.
    baseline = [c["value"] for c in grid["cells"] if c["module_set"] == "none"]
    assert sum(baseline) / len(baseline) > 0.6

    for name in ("distribution.csv", "deviation.json", "logit_lens.json", "logit_lens.png"):
        assert (out / "analysis" / name).is_file(), name
    page = _Page()
    page.feed((out / "report.html").read_text())
    # The grid's values and changes, the selection, one deviation table and one lens table per
    # task; the three distribution figures and the lens figure, embedded.
    assert page.tags["table"] == 3 + 2 * len(DOMAINS)
    assert page.tags["img"] == 4 and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert (out / "report.md").read_text().startswith("# mmneuron-bench report")


class _Page(HTMLParser):
    """Counts the report's tags and collects the figures' sources."""

    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
