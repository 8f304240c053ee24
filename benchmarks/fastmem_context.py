"""FastMem on the shipped miniature model: does memorising the hint make it follow the hint?

    python benchmarks/fastmem_context.py --out fastmem-context.json

The context task (``mmneuron_bench.synthetic.context``) asks the colour of an object; the
prompt may carry a hint that agrees with the image (consistent), contradicts it (conflict:
the reference answer is the hint's colour, as in NQ-SWAP), says something else (irrelevant),
or is the only source (hintonly: no object drawn); ``none`` has no hint. Every answer goes
through lmms-eval and the ``mmneuron`` model, as ``mmneuron-bench run`` does it.

1. Choose FastMem's learning rate and step count on the ``dev`` split (never trained on):
   the setting with the best mean accuracy over the five conditions. The paper's defaults
   (lr 1e-5, 10 steps) are for a 8 B model; a 1 M-parameter model needs its own.
2. On the ``eval`` split, compare with the plain model, per condition: the paper's defaults,
   the chosen setting, the chosen setting + CD (alpha 0.5), and two controls with the chosen
   setting: memorising the question instead of the hint, and memorising a hint of a third
   colour (neither the image's nor the prompt's hint's; ``memorised_match``: how often that
   colour is answered). Differences come with a 95 % paired bootstrap interval (resampling
   documents) and the answers that flipped each way; a difference whose interval holds 0 is
   reported as no effect.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mmneuron_bench.domains.tasks import task_manager  # noqa: E402
from mmneuron_bench.interventions.fastmem import FastMemIntervention  # noqa: E402
from mmneuron_bench.lmms.evaluate import evaluate  # noqa: E402
from mmneuron_bench.lmms.model import MMNeuronLMM  # noqa: E402
from mmneuron_bench.synthetic.context import COLORS, CONDITIONS, color_sentence  # noqa: E402
from mmneuron_bench.synthetic.mini_model import MINI_MODEL_DIR  # noqa: E402
from mmneuron_bench.synthetic.scoring import is_correct  # noqa: E402

SWEEP = [(lr, steps) for lr in (1e-4, 1e-3, 1e-2) for steps in (10, 30)]
PAPER = {"lr": 1e-5, "steps": 10, "kl": 0.1}


def task(condition: str, split: str) -> str:
    return f"mmneuron_synth_context_{condition}_{split}"


def third_colour(doc: dict) -> str:
    """A colour that is neither the image's, the hint's nor the answer (chosen by index)."""
    taken = {doc["answer"], doc["image_answer"], *doc["context"].split()}
    others = [c for c in COLORS if c not in taken]
    return others[doc["index"] % len(others)]


class ThirdColour(FastMemIntervention):
    """FastMem that memorises ``the object is X .`` with X from :func:`third_colour`."""

    def attach(self, target) -> None:
        super().attach(target)
        document = target.document

        def swapped(request):
            doc = dict(document(request))
            return {**doc, "context": color_sentence(third_colour(doc))}

        self._target = dataclasses.replace(target, document=swapped)


def answers(lm: MMNeuronLMM, split: str, limit: int | None, fastmem: dict | None) -> dict:
    """Per condition, each document's correctness (0/1, by doc id), and for conflicts
    whether the image's colour was answered; plus FastMem's mean NLL before and after."""
    lm.interventions.remove("fastmem")
    if fastmem is not None:
        setting = dict(fastmem)
        kind = ThirdColour if setting.pop("third_colour", False) else FastMemIntervention
        lm.interventions.add(kind(**setting))
    names = [task(c, split) for c in CONDITIONS]
    start = time.perf_counter()
    results = evaluate(lm, names, task_manager(names, [], lm.base_name), limit)
    out: dict = {"seconds": time.perf_counter() - start}
    for condition, name in zip(CONDITIONS, names, strict=True):
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        out[condition] = [s["exact_match"] for s in samples]
        if condition == "conflict":
            out["conflict_image"] = [s["image_match"] for s in samples]
        out[f"{condition}_third"] = [
            float(is_correct(s["filtered_resps"][0], third_colour(s["doc"]))) for s in samples
        ]
    held = lm.interventions.get("fastmem")
    if held is not None and held.records:
        for key in ("nll_before", "nll_after"):
            out[key] = sum(r[key] for r in held.records) / len(held.records)
    return out


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def paired(base: list[float], other: list[float], seed: int = 0, draws: int = 10_000) -> dict:
    """Difference of means with a 95 % paired bootstrap interval, and the flips each way."""
    rng = random.Random(seed)
    n = len(base)
    diffs = [o - b for b, o in zip(base, other, strict=True)]
    boot = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    low, high = boot[int(0.025 * draws)], boot[int(0.975 * draws) - 1]
    return {
        "difference": mean(diffs),
        "ci95": [low, high],
        "gained": sum(d > 0 for d in diffs),
        "lost": sum(d < 0 for d in diffs),
        "effect": not low <= 0 <= high,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("fastmem-context.json"))
    parser.add_argument("--dev-limit", type=int, default=None, help="dev documents per condition")
    parser.add_argument("--eval-limit", type=int, default=None, help="eval documents per condition")
    parser.add_argument("--pretrained", default=str(MINI_MODEL_DIR))
    args = parser.parse_args()

    lm = MMNeuronLMM(pretrained=args.pretrained, device="cpu")
    report: dict = {"model": lm.identity(), "sweep": [], "eval": {}}
    best, best_score = None, -1.0
    for lr, steps in SWEEP:
        setting = {"lr": lr, "steps": steps, "kl": 0.1}
        dev = answers(lm, "dev", args.dev_limit, setting)
        score = mean([mean(dev[c]) for c in CONDITIONS])
        report["sweep"].append(
            {**setting, "mean_accuracy": score, **{c: mean(dev[c]) for c in CONDITIONS}}
        )
        print(f"dev lr {lr:g} steps {steps}: mean {score:.3f}", flush=True)
        if score > best_score:
            best, best_score = setting, score
    dev_plain = answers(lm, "dev", args.dev_limit, None)
    report["dev_plain"] = {c: mean(dev_plain[c]) for c in CONDITIONS}
    report["chosen"] = best
    settings = {
        "plain": None,
        "fastmem (paper defaults)": PAPER,
        "fastmem": best,
        "fastmem + CD": {**best, "cd": 0.5},
        "fastmem, question memorised": {**best, "target": "question"},
        "fastmem, third colour memorised": {**best, "third_colour": True},
    }
    runs = {}
    for name, setting in settings.items():
        runs[name] = answers(lm, "eval", args.eval_limit, setting)
        print(f"eval {name}: {runs[name]['seconds']:.0f} s", flush=True)
    rows = [*CONDITIONS, "conflict_image"]
    for name, run in runs.items():
        entry = {"setting": settings[name], "seconds": run["seconds"]}
        for key in ("nll_before", "nll_after"):
            if key in run:
                entry[key] = run[key]
        for row in [*rows, *(f"{c}_third" for c in CONDITIONS)]:
            entry[row] = {"value": mean(run[row]), "n": len(run[row])}
            if name != "plain":
                entry[row]["vs_plain"] = paired(runs["plain"][row], run[row])
            if name.startswith(("fastmem, ", "fastmem +")):  # against FastMem on the hint
                entry[row]["vs_fastmem"] = paired(runs["fastmem"][row], run[row])
        entry["per_document"] = {row: run[row] for row in rows}
        report["eval"][name] = entry
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    header = f"{'':30s}" + "".join(f"{r:>16s}" for r in rows)
    print(header)
    for name, entry in report["eval"].items():
        cells = []
        for row in rows:
            cell = f"{entry[row]['value']:.3f}"
            if "vs_plain" in entry[row]:
                d = entry[row]["vs_plain"]
                cell += f" ({d['difference']:+.3f}{'*' if d['effect'] else ''})"
            cells.append(f"{cell:>16s}")
        print(f"{name:30s}" + "".join(cells))
    name = "fastmem, third colour memorised"
    third = report["eval"][name]
    print(
        f"{name}: answers the memorised colour in "
        + ", ".join(f"{c} {third[f'{c}_third']['value']:.3f}" for c in CONDITIONS)
        + f" (plain: {report['eval']['plain']['conflict_third']['value']:.3f} of conflicts)"
    )
    for control in ("fastmem + CD", "fastmem, question memorised", name):
        d = report["eval"][control]["conflict"]["vs_fastmem"]
        print(
            f"conflict, {control} vs fastmem: {d['difference']:+.3f} "
            f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
