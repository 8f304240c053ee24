"""``mmneuron-bench neurons``: multimodal neurons by contribution score, their ablation, editing."""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from mmneuron_bench.cli.checks import (
    SEED,
    allow_other_model_option,
    check_outputs,
    model_inputs,
    model_skeleton,
    task_inputs,
)
from mmneuron_bench.cli.options import (
    FiniteFloatRange,
    ModelChoice,
    OptionConflict,
    model_options,
    out_file_option,
    preset_option,
    task_names,
)
from mmneuron_bench.console import print_table, progress
from mmneuron_bench.distributed import SINGLE, launched_processes, processes
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.atomic import all_or_nothing
from mmneuron_bench.formats.outputs import write_json
from mmneuron_bench.tables import Table

SHOW_TOKENS = 20  # tokens in the printed table of `find` (the JSON has all)
SHOW_NEURONS = 3  # neurons per token in that table


@click.group("neurons")
def neurons() -> None:
    """Multimodal neurons (Pan et al.): find them by contribution score, ablate them, edit them."""


_batch_size_option = click.option(
    "--batch-size", type=click.IntRange(min=1), default=1, show_default=True
)
_neurons_file_option = click.option(
    "--neurons",
    "neurons_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Neurons file written by `neurons find`.",
)


def _data_options(required: bool):
    """--tasks, --include-path, --limit, --prompt, --max-new-tokens (ablate/edit: file's).

    The command receives them as one keyword argument, ``data_options`` (a :class:`DataOptions`).
    """
    default = "" if required else " (default: the neurons file's)"

    def wrap(command):
        @functools.wraps(command)
        def with_data(*args, task_specs, include_paths, limit, prompt, max_new_tokens, **kwargs):
            given = DataOptions(task_specs, include_paths, limit, prompt, max_new_tokens)
            return command(*args, data_options=given, **kwargs)

        for option in reversed(
            [
                click.option(
                    "--tasks",
                    "task_specs",
                    multiple=True,
                    required=required,
                    help=f"lmms-eval task(s) (tags and groups: their tasks), comma-separated "
                    f"or repeated{default}.",
                ),
                click.option(
                    "--include-path",
                    "include_paths",
                    multiple=True,
                    help=f"Extra lmms-eval task folders{default}.",
                ),
                click.option(
                    "--limit",
                    type=click.IntRange(min=1),
                    help=f"At most N documents per task{default}.",
                ),
                click.option(
                    "--prompt",
                    help=f"One text for every image instead of the task's question{default}.",
                ),
                click.option(
                    "--max-new-tokens",
                    type=click.IntRange(min=1),
                    default=16 if required else None,
                    show_default=required,
                    help=f"Tokens generated per image{default}.",
                ),
            ]
        ):
            with_data = option(with_data)
        return with_data

    return wrap


@dataclass(frozen=True)
class Data:
    """Which documents are captioned or answered, and how."""

    tasks: list[str]
    include_paths: list[str]
    limit: int | None
    prompt: str | None
    max_new_tokens: int


@dataclass(frozen=True)
class DataOptions:
    """The data options as given on the command line (empty or None: not given)."""

    task_specs: tuple[str, ...]
    include_paths: tuple[str, ...]
    limit: int | None
    prompt: str | None
    max_new_tokens: int | None

    def over(self, params: dict) -> Data:
        """The data settings ``params`` (a neurons file's), each overridden where given."""
        tasks = task_names(self.task_specs) if self.task_specs else params.get("tasks")
        if not tasks:
            raise MMNeuronError("the neurons file names no tasks; give --tasks")
        return Data(
            tasks,
            list(self.include_paths) or params.get("include_paths", []),
            self.limit if self.limit is not None else params.get("limit"),
            self.prompt if self.prompt is not None else params.get("prompt"),
            self.max_new_tokens or params.get("max_new_tokens", 16),
        )


def _load(model: ModelChoice, group=None):
    from mmneuron_bench.models.loading import model_identity

    loaded = model.load(group)
    return loaded, loaded.adapter.resolve(loaded.model), model_identity(loaded, model.pretrained)


def _tasks(model: ModelChoice, data: Data, outputs: list, inputs: list) -> dict:
    """The data's tasks (tags and groups expanded), loaded before the model after checking
    that no output is an input (the model's and the tasks' files included)."""
    from mmneuron_bench.domains.tasks import load_tasks

    check_outputs(outputs, [*inputs, *model_inputs(model), *task_inputs(data.include_paths)])
    return load_tasks(data.tasks, data.include_paths)


def _tokenizer(model: ModelChoice):
    """The model's tokenizer, to check token names before the weights load."""
    from mmneuron_bench.models.folder import load_processor

    return load_processor(model.pretrained, model.adapter()).tokenizer


def _generate(
    loaded, components, tasks: dict, data: Data, batch_size: int, activations=None, group=SINGLE
):
    """The greedy generation of each sample of the (loaded) tasks (each process of ``group``
    generating its share of the batches; all get every generation, in order)."""
    from mmneuron_bench.domains.tasks import domain_samples
    from mmneuron_bench.neurons.generation import generate

    samples = domain_samples(tasks, list(tasks), data.limit)
    mine = []
    with progress() as bars:
        starts = group.take(range(0, len(samples), batch_size))
        total = sum(len(samples[s : s + batch_size]) for s in starts)
        bar = bars.add_task("generating", total=total)
        for batch in generate(
            loaded,
            tasks,
            samples,
            data.prompt,
            data.max_new_tokens,
            batch_size,
            activations,
            components,
            group,
        ):
            mine.append(batch)
            bars.advance(bar, len(batch))
    return [g for batch in group.in_order(mine) for g in batch]


def _load_neurons(path: Path):
    from mmneuron_bench.formats.mask import NeuronMask

    return NeuronMask.load(path)


@neurons.command("find")
@model_options
@_batch_size_option
@_data_options(required=True)
@click.option(
    "--top-k", type=click.IntRange(min=1), default=10, show_default=True, help="Neurons per token."
)
@click.option(
    "--token",
    "words",
    multiple=True,
    help="Keep only this token or word (all its tokens); repeat for several.",
)
@out_file_option("Neurons file to write (mask format, *.mask.safetensors).")
@click.option(
    "--scores",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON of scores, promoted tokens and generations (default: OUT with .json).",
)
@click.option(
    "--aggregate",
    type=click.Choice(["mean", "paper"]),
    help="mean: the score averaged over every position that generated the token; paper: per "
    "image and word at its first occurrence, a token's neurons those most often in the "
    "per-image top-k.  [default: mean; paper with --preset paper]",
)
@preset_option
def find(
    model: ModelChoice,
    batch_size,
    data_options: DataOptions,
    top_k,
    words,
    out,
    scores,
    aggregate,
    preset,
) -> None:
    """Score every llm neuron for every generated token; keep each token's top-k neurons.

    s[l, k] = a[l, k] * (W_down[l][:, k] . W_U[t]) at the position that predicts token t,
    averaged over every position that generated t (--aggregate paper: per image and word).
    """
    from mmneuron_bench.neurons.anatomy import down_weights, llm_component, unembedding
    from mmneuron_bench.neurons.neurons_file import contribution_mask
    from mmneuron_bench.neurons.scores import (
        FirstOccurrenceRanking,
        TokenActivations,
        promoted_tokens,
        word_starts,
    )

    aggregate = aggregate or ("paper" if preset == "paper" else "mean")
    scores = scores or _default_scores(out)
    data = data_options.over({})
    tasks = _tasks(model, data, [out, scores], [])
    neurons = llm_component(model_skeleton(model)[1]).info
    if top_k > neurons.layers * neurons.width:
        raise MMNeuronError(
            f"--top-k {top_k} exceeds the {neurons.layers * neurons.width} llm neurons"
        )
    keep = None
    if words:
        keep = set()
        tokenizer = _tokenizer(model)
        for word in words:
            ids = tokenizer.encode(word, add_special_tokens=False)
            if not ids:
                raise MMNeuronError(f"--token {word!r} is no token at all")
            keep.update(ids)
    group = processes()
    loaded, components, model_meta = _load(model, group)
    tokenizer = loaded.processor.tokenizer
    llm = llm_component(components)
    down = down_weights(llm)
    unembed = unembedding(loaded).detach()
    if aggregate == "paper":
        starts = word_starts(tokenizer)
        activations = FirstOccurrenceRanking(llm.info, down, unembed, top_k, starts, keep)
    else:
        activations = TokenActivations(llm.info, keep)
    generations = _generate(loaded, components, tasks, data, batch_size, activations, group)
    parts = group.gather(activations.totals())
    if parts is None:  # another process than the main one: the main one writes
        return
    for part in parts[1:]:
        activations.add_totals(part)
    found = (
        activations.top(top_k) if aggregate == "paper" else activations.top(top_k, down, unembed)
    )
    promoted = promoted_tokens(
        [tuple(n) for item in found for n in item.neurons.tolist()], down, unembed
    )
    params = {**asdict(data), "top_k": top_k, "samples": len(generations), "only": list(words)}
    if aggregate == "paper":
        params["aggregate"] = "paper"
    mask = contribution_mask(components, model_meta, found, tokenizer, params)
    report = _scores_json(mask, found, promoted, generations, tokenizer)
    if aggregate == "paper":
        report["per_image"] = activations.lists_json(lambda t: tokenizer.decode([t]))
    with all_or_nothing():
        write_json(scores, report)
        mask.save(out)
    print_table(_find_table(mask, found, promoted, tokenizer, scores))
    click.echo(f"wrote {os.fspath(out)}")
    click.echo(f"wrote {os.fspath(scores)}")


def _default_scores(out: Path) -> Path:
    return out.with_suffix(".json") if out.suffix == ".safetensors" else Path(f"{out}.json")


def _scores_json(mask, found, promoted, generations, tokenizer) -> dict:
    texts = {}

    def text(token: int) -> str:
        if token not in texts:
            texts[token] = tokenizer.decode([token])
        return texts[token]

    tokens = []
    for domain, item in zip(mask.domains, found, strict=True):
        neurons = [
            {
                "layer": layer,
                "neuron": neuron,
                "score": float(score),
                "promotes": [text(t) for t in promoted[(layer, neuron)]],
            }
            for (layer, neuron), score in zip(item.neurons.tolist(), item.scores, strict=True)
        ]
        tokens.append(
            {
                "domain": domain,
                **mask.params["tokens"][domain],
                "count": item.count,
                "samples": item.samples,
                "neurons": neurons,
            }
        )
    return {
        "method": mask.method,
        "model": mask.model,
        "params": {k: v for k, v in mask.params.items() if k != "tokens"},
        "score": "s[l,k] = a[l,k] * (W_down[l][:,k] . W_U[t]), mean over positions generating t",
        "tokens": tokens,
        "generations": [
            {
                "task": g.sample.task,
                "index": g.sample.index,
                "text": tokenizer.decode(list(g.tokens), skip_special_tokens=True),
                "tokens": list(g.tokens),
            }
            for g in generations
        ],
    }


def _find_table(mask, found, promoted, tokenizer, scores: Path) -> Table:
    rows = []
    for domain, item in list(zip(mask.domains, found, strict=True))[:SHOW_TOKENS]:
        text = mask.params["tokens"][domain]["text"]
        for rank, ((layer, neuron), score) in enumerate(
            zip(item.neurons.tolist()[:SHOW_NEURONS], item.scores, strict=False)
        ):
            promotes = ", ".join(repr(tokenizer.decode([t])) for t in promoted[(layer, neuron)])
            rows.append(
                [
                    text if rank == 0 else "",
                    str(item.count) if rank == 0 else "",
                    f"{layer}:{neuron}",
                    f"{float(score):.4g}",
                    promotes,
                ]
            )
    caption = (
        f"Top neurons per token (first {SHOW_TOKENS} tokens by count, {SHOW_NEURONS} neurons "
        f"each; all in {scores})"
    )
    return Table(caption, ["token", "count", "layer:neuron", "score", "promotes"], rows)


@neurons.command("ablate")
@model_options
@_batch_size_option
@_data_options(required=False)
@_neurons_file_option
@click.option(
    "--token", "words", multiple=True, help="Token (word) to test; repeat (default: every one)."
)
@click.option(
    "--draws", type=click.IntRange(min=1), default=3, show_default=True, help="Random controls."
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--method",
    type=click.Choice(["zero", "noise"]),
    help="zero: switch the neurons off; noise: add sigma * N(0, I) to their output weights "
    "(seed 002's perturbation).  [default: zero; noise with --preset paper]",
)
@click.option(
    "--sigma",
    type=FiniteFloatRange(min=0),
    help="Standard deviation of the noise (--method noise).",
)
@preset_option
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results as JSON."
)
@allow_other_model_option
def ablate(
    model: ModelChoice,
    batch_size,
    data_options: DataOptions,
    neurons_path,
    words,
    draws,
    seed,
    method,
    sigma,
    preset,
    out,
    allow_other_model,
) -> None:
    """Causal check: p(token) with its top-k neurons off (or perturbed) versus k random ones.

    The images are captioned or answered again (greedily, settings from the neurons file unless
    given), and p(token) is read, teacher-forced, where the token was generated.
    """
    method = method or ("noise" if preset == "paper" else "zero")
    if method == "noise" and sigma is None:
        raise OptionConflict("--method noise needs --sigma (the official code gives no default)")
    if method == "zero" and sigma is not None:
        raise OptionConflict("--sigma needs --method noise")
    from mmneuron_bench.neurons.ablation import ablate as run_ablation
    from mmneuron_bench.neurons.neurons_file import check_contribution_mask
    from mmneuron_bench.neurons.tokens import resolve_token

    mask = _load_neurons(neurons_path)
    data = data_options.over(mask.params)
    tasks = _tasks(model, data, [out], [neurons_path])
    other = check_contribution_mask(
        mask, model_skeleton(model)[0], str(neurons_path), allow_other_model
    )
    tokenizer = _tokenizer(model) if words else None
    domains = [resolve_token(mask, tokenizer, w) for w in words] if words else mask.domains
    group = processes()
    loaded, components, model_meta = _load(model, group)
    generations = _generate(loaded, components, tasks, data, batch_size, group=group)
    results = run_ablation(
        loaded, components, tasks, generations, mask, list(dict.fromkeys(domains)), draws, seed,
        batch_size, method, sigma or 0.0, model_meta, group,
    )  # fmt: skip
    if not group.main:
        return
    missing = sorted(set(domains) - {r.domain for r in results})
    print_table(_ablation_table(mask, results, draws, seed, method, sigma))
    if missing:
        click.echo(f"not generated this time, so not tested: {', '.join(missing)}")
    if out is not None:
        write_json(
            out,
            {
                "neurons": os.fspath(neurons_path),
                "data": asdict(data),
                "draws": draws,
                "seed": seed,
                "method": method,
                "sigma": sigma,
                "tokens": [
                    {**asdict(r), "text": mask.params["tokens"][r.domain]["text"]} for r in results
                ],
                "not_generated": missing,
                **({"other_model": {os.fspath(neurons_path): mask.model}} if other else {}),
            },
        )
        click.echo(f"wrote {os.fspath(out)}")


def _ablation_table(mask, results, draws: int, seed: int, method: str, sigma) -> Table:
    header = ["token", "neurons", "positions", "p", "top-k off", "random off", "drop top-k",
              "drop random"]  # fmt: skip
    rows = [
        [
            mask.params["tokens"][r.domain]["text"],
            str(r.neurons),
            str(r.positions),
            f"{r.p_base:.4f}",
            f"{r.p_top:.4f}",
            f"{r.p_random:.4f}",
            f"{r.p_base - r.p_top:+.4f}",
            f"{r.p_base - r.p_random:+.4f}",
        ]
        for r in results
    ]
    what = "switched off" if method == "zero" else f"perturbed (sigma {sigma})"
    pool = "other llm neurons" if method == "zero" else "llm neurons"
    caption = (
        f"p(token) where it was generated, with neurons {what} (random: mean of "
        f"{draws} draw(s) of as many {pool}, seed {seed})"
    )
    return Table(caption, header, rows)


@neurons.command("edit")
@model_options
@_batch_size_option
@_data_options(required=False)
@_neurons_file_option
@click.option("--source", required=True, help="Token (word) whose top neurons are edited.")
@click.option("--target", required=True, help="Token (word, exactly one token) to move them to.")
@click.option(
    "--strength",
    type=FiniteFloatRange(),
    default=1.0,
    show_default=True,
    help="Share of each neuron's source-direction output moved to the target (see docs).",
)
@out_file_option("Edit file to write (*.edit.safetensors).")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Measure the edit on the data (before vs after) and write the numbers as JSON.",
)
@allow_other_model_option
def edit(
    model: ModelChoice,
    batch_size,
    data_options: DataOptions,
    neurons_path,
    source,
    target,
    strength,
    out,
    report,
    allow_other_model,
) -> None:
    """Move the output weights of SOURCE's top neurons from its unembedding toward TARGET's.

    Writes a small edit file that applies to the model and is removed exactly (for `run` and
    lmms-eval's model_args edit=FILE). With --report, the edit is measured on the neurons
    file's data.
    """
    from mmneuron_bench.formats.common import sha256_file
    from mmneuron_bench.neurons.editing import compute_edit, edit_effects
    from mmneuron_bench.neurons.neurons_file import check_contribution_mask
    from mmneuron_bench.neurons.tokens import resolve_token, single_token

    if launched_processes() > 1:
        raise MMNeuronError("neurons edit runs in one process: start it without accelerate launch")
    mask = _load_neurons(neurons_path)
    if report is None:
        check_outputs([out], [neurons_path, *model_inputs(model)])
    else:
        data = data_options.over(mask.params)
        tasks = _tasks(model, data, [out, report], [neurons_path])
    other = check_contribution_mask(
        mask, model_skeleton(model)[0], str(neurons_path), allow_other_model
    )
    tokenizer = _tokenizer(model)
    domain = resolve_token(mask, tokenizer, source)
    target_id = single_token(tokenizer, target)
    extra = {"neurons_file": sha256_file(neurons_path)}
    if other:
        extra["other_model"] = {os.fspath(neurons_path): mask.model}
    loaded, components, model_meta = _load(model)
    weight_edit = compute_edit(
        loaded, components, model_meta, mask, domain, target_id, strength, extra
    )
    print_table(_edit_table(weight_edit))
    effects = None
    if report is not None:
        generations = _generate(loaded, components, tasks, data, batch_size)
        effects = edit_effects(
            loaded, tasks, generations, weight_edit, data.prompt, data.max_new_tokens, batch_size
        )
        print_table(_effects_table(effects, weight_edit))
    with all_or_nothing():  # the edit and its report together, or neither
        weight_edit.save(out)
        if effects is not None:
            write_json(report, {"edit": weight_edit.params, "data": asdict(data), **effects})
    for path in (out, report):
        if path is not None:
            click.echo(f"wrote {os.fspath(path)}")


def _edit_table(weight_edit) -> Table:
    p = weight_edit.params
    rows = [
        [
            e.module,
            str(len(e.columns)),
            f"{float((e.delta.norm(dim=0) / e.original.norm(dim=0)).mean()):.3f}",
        ]
        for e in weight_edit.edits
    ]
    caption = f"Edit: {p['source']['text']!r} -> {p['target']['text']!r}, strength {p['strength']}"
    return Table(caption, ["module", "columns", "|delta| / |w|"], rows)


def _effects_table(effects: dict, weight_edit) -> Table:
    source = weight_edit.params["source"]["text"]
    target = weight_edit.params["target"]["text"]
    s, o, n = effects["source_positions"], effects["other_positions"], effects["samples"]
    where = f"where {source!r} was generated ({s['count']})"
    rows = [
        (f"p({source}) {where}", s["p_source_before"], s["p_source_after"]),
        (f"p({target}) there", s["p_target_before"], s["p_target_after"]),
        (f"argmax is {target!r} there", None, s["argmax_target_after"]),
        (f"other positions ({o['count']}): mean |change of p(generated)|", None,
         o["mean_abs_change_p_generated"]),
        ("other positions: mean total variation", None, o["mean_total_variation"]),
        ("other positions: argmax changed", None, o["argmax_changed"]),
        (f"samples without {source!r} ({n['without_source']}): output changed", None,
         n["without_source_output_changed"]),
        (f"samples with {source!r} ({n['with_source']}): output changed", None,
         n["with_source_output_changed"]),
    ]  # fmt: skip
    return Table(
        "Effect of the edit (teacher-forced on the unedited outputs)",
        ["measure", "before", "after"],
        [[name, _fmt(before), _fmt(after)] for name, before, after in rows],
    )


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
