"""``mmneuron-bench demo``: the whole study, offline, on the shipped miniature model.

Each step is the public command a researcher would type, so the demo is also the worked
example: record on the synthetic train splits, DAPE selection, the module-set grid with the
random baseline on the eval splits, the three analyses, and the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console

from mmneuron_bench.cli import VERBOSE
from mmneuron_bench.console import print_table
from mmneuron_bench.tables import Table

DOMAINS = ("common", "medical", "driving", "remote", "documents")
# The paper's 1 % of a 7 B model is thousands of neurons; of this model's 2432 it is 24, too
# few to move any answer, so the demo keeps the lowest-entropy 10 %.
TOP_RATE = "0.1"


def demo_steps(out: Path, model_dir: str, quick: bool) -> list[tuple[str, list[str]]]:
    """The (title, command line) of every step, in order."""
    record_limit, eval_limit, analysis_limit = ("12", "8", "4") if quick else ("300", "100", "20")
    train = [a for d in DOMAINS for a in ("--domain", f"{d}=mmneuron_synth_{d}_train")]
    evals = ",".join(f"mmneuron_synth_{d}_eval" for d in DOMAINS)
    stats, mask = str(out / "mini.stats.safetensors"), str(out / "mini.mask.safetensors")
    model = ["--pretrained", model_dir]
    analysis = str(out / "analysis")
    return [
        ("Record activation statistics (train splits)",
         ["record", *model, *train, "--limit", record_limit, "--batch-size", "8", "--out", stats]),
        ("Select domain-specific neurons (DAPE, top 10 %)",
         ["select", stats, "--top-rate", TOP_RATE, "--out", mask]),
        ("Evaluate with neurons off: module-set grid and random baseline (eval splits)",
         ["run", *model, "--mask", mask, "--tasks", evals, "--limit", eval_limit, "--grid",
          "--baseline", "random", "--output", str(out / "grid")]),
        ("Where the neurons are", ["analyze", "distribution", mask, "--output", analysis]),
        ("How far hidden states move",
         ["analyze", "deviation", *model, "--mask", mask, "--tasks", evals,
          "--limit", analysis_limit, "--output", analysis]),
        ("Logit lens",
         ["analyze", "logit-lens", *model, "--mask", mask, "--tasks", evals,
          "--limit", analysis_limit, "--output", analysis]),
        ("Report", ["report", str(out)]),
    ]  # fmt: skip


def findings_table(grid_json: Path) -> Table:
    """Per eval task (its domain) and module set: accuracy with nothing off, then its change with
    the task's own domain neurons off (DAPE, with the 95 % paired-bootstrap interval; ``*``: the
    interval excludes 0 and McNemar's p < 0.05) and with a random mask of the same size."""
    from mmneuron_bench.lmms.grid import Cell, cell_changes

    grid = json.loads(grid_json.read_text())
    value = {(c["module_set"], c["mask"], c["task"]): c["value"] for c in grid["cells"]}
    changes = cell_changes(grid["cells"])
    rows = []
    for task, info in grid["tasks"].items():
        base = value[("none", "dape", task)]
        for n, module_set in enumerate(s for s in grid["module_sets"] if s != "none"):
            c = changes[Cell(module_set, "dape", task)]
            mark = " *" if c.significant else ""
            rows.append(
                [
                    info["domain"] if n == 0 else "",
                    f"{base:.2f}" if n == 0 else "",
                    module_set,
                    f"{c.value:+.2f} [{c.low:+.2f}, {c.high:+.2f}]{mark}",
                    f"{value[(module_set, 'random', task)] - base:+.2f}",
                ]
            )
    return Table(
        "Accuracy with nothing off, and its change with the domain's neurons off "
        "(95 % interval; * excludes 0, and McNemar p < 0.05)",
        ["domain", "none", "module set", "DAPE", "random"],
        rows,
        keep=3,
    )


@click.command()
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for every output.  [default: mmneuron-demo, or mmneuron-demo-quick]",
)
@click.option("--quick", is_flag=True, help="A handful of samples per domain (for CI).")
@click.pass_context
def demo(ctx: click.Context, output: Path | None, quick: bool) -> None:
    """Run the whole MMNeuron study offline on the shipped miniature LLaVA-NeXT."""
    from mmneuron_bench.synthetic.mini_model import MINI_MODEL_DIR

    output = output or Path("mmneuron-demo-quick" if quick else "mmneuron-demo")
    console = Console(stderr=True)
    output.mkdir(parents=True, exist_ok=True)
    root = ctx.find_root().command
    timings = []
    verbose = ["--verbose"] if ctx.meta.get(VERBOSE) else []
    for title, args in demo_steps(output, str(MINI_MODEL_DIR), quick):
        console.rule(title)
        console.print("mmneuron-bench " + " ".join(args), style="dim", soft_wrap=True)
        start = time.monotonic()
        root.main([*args, *verbose], prog_name="mmneuron-bench", standalone_mode=False)
        timings.append([title, f"{time.monotonic() - start:.1f}"])
    caption = "mmneuron-bench demo" + (" (quick)" if quick else "")
    print_table(Table(caption, ["step", "seconds"], timings))
    print_table(findings_table(output / "grid" / "grid.json"))
    Console().print(f"report: {(output / 'report.html').resolve()}")
