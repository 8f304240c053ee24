"""``--preset paper``: each difference from the default against an independent computation."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import domain_samples, load_tasks, question_text
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.targets import parse_modules, preset_module_sets
from mmneuron_bench.models.loading import load_model, model_identity
from mmneuron_bench.neurons.ablation import noise_edit
from mmneuron_bench.neurons.anatomy import down_weights, llm_component, unembedding
from mmneuron_bench.neurons.generation import generate
from mmneuron_bench.neurons.scores import FirstOccurrenceRanking, word_starts
from mmneuron_bench.plugins.registry import get_registry
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.selection.random import random_neurons
from mmneuron_bench.testing import write_tiny_task

POST_PROMPT = "\nAnswer the question with one word."


@pytest.fixture(scope="module")
def prompted(tmp_path_factory) -> Path:
    """A tiny task whose prompt adds a post-prompt through lmms_eval_specific_kwargs."""
    root = tmp_path_factory.mktemp("prompted")
    folder = write_tiny_task(root, "prompted_shapes", n_docs=3, seed=4)
    (folder / "utils.py").write_text(
        (folder / "utils.py")
        .read_text()
        .replace(
            '    return doc["question"]',
            "    kwargs = lmms_eval_specific_kwargs or {}\n"
            '    return kwargs.get("pre_prompt", "") + doc["question"] + '
            'kwargs.get("post_prompt", "")',
        )
    )
    yaml = folder / "prompted_shapes.yaml"
    yaml.write_text(
        yaml.read_text()
        + textwrap.dedent(
            f"""\
            lmms_eval_specific_kwargs:
              default:
                pre_prompt: ""
                post_prompt: {json.dumps(POST_PROMPT)}
            """
        )
    )
    return root


def test_the_paper_prompt_is_the_bare_question_after_the_image_token(
    tiny_llava_next, tiny_instructblip, prompted
):
    tasks = load_tasks(["prompted_shapes"], [str(prompted)])
    task = tasks["prompted_shapes"]
    doc = task.eval_docs[0]
    assert question_text(task, doc) == doc["question"] + POST_PROMPT
    assert question_text(task, doc, bare=True) == doc["question"]
    llava = load_model(str(tiny_llava_next))
    assert llava.adapter.paper_prompt(llava.processor, "what is it ?") == "<image>\nwhat is it ?"
    image = doc["image"].convert("RGB")
    built = llava.adapter.build_inputs(llava.processor, [image], [doc["question"]], paper=True)
    literal = llava.processor(images=[image], text=[f"<image>\n{doc['question']}"],
                              return_tensors="pt")  # fmt: skip
    assert torch.equal(built["input_ids"], literal["input_ids"])
    default = llava.adapter.build_inputs(llava.processor, [image], [doc["question"]])
    assert default["input_ids"].shape != built["input_ids"].shape  # the chat template
    blip = load_model(str(tiny_instructblip))
    assert blip.adapter.paper_prompt(blip.processor, "what is it ?") == "what is it ?"


def test_record_with_the_paper_preset_counts_the_bare_prompt(tiny_llava_next, prompted, tmp_path):
    out = tmp_path / "paper.stats.safetensors"
    args = ["record", "--pretrained", str(tiny_llava_next), "--include-path", str(prompted),
            "--domain", "shapes=prompted_shapes", "--preset", "paper",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(build_cli(), args)
    assert result.exit_code == 0, result.output
    stats = ActivationStats.load(out)
    assert stats.prompt == "paper" and stats.unused == {"vision": [2]}
    # The same counts from the literal prompts, independently of the recording code.
    loaded = load_model(str(tiny_llava_next))
    components = loaded.adapter.resolve(loaded.model)
    tasks = load_tasks(["prompted_shapes"], [str(prompted)])
    recorder = ActivationRecorder(components, 1, "cpu")
    for sample in domain_samples(tasks, ["prompted_shapes"], None):
        doc = tasks["prompted_shapes"].eval_docs[sample.index]
        image, text = doc["image"].convert("RGB"), f"<image>\n{doc['question']}"
        inputs = loaded.processor(images=[image], text=[text], return_tensors="pt")
        recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs))
        with recorder.hooks(), torch.inference_mode():
            loaded.model(**inputs)
    for c in components:
        assert torch.equal(stats.active[c.name], recorder.active[c.name]), c.name
        assert torch.equal(stats.tokens[c.name], recorder.tokens[c.name]), c.name


def test_paper_module_sets_per_family():
    registry = get_registry()
    llava, blip = registry.adapter("llava_next"), registry.adapter("instructblip")
    names = ["none", "vision", "connector", "llm", "all"]
    assert preset_module_sets(names, "default", llava) == names
    assert preset_module_sets(names, "paper", llava) == [
        "none", "vision+connector", "connector", "llm", "all"
    ]  # fmt: skip
    # InstructBLIP's "Vision Encoder" row is the ViT; its "Q-Former" row both Q-Former FFNs.
    assert preset_module_sets(names, "paper", blip) == names
    assert parse_modules("vision+connector") == ("vision", "connector")
    qformer = {c.name for c in blip.components if c.role in parse_modules("connector")}
    assert qformer == {"qformer_query", "qformer_text"}


def test_the_per_image_ranking_equals_an_independent_computation(planted, tmp_path):
    loaded = load_model(str(planted))
    components = loaded.adapter.resolve(loaded.model)
    llm = llm_component(components)
    root = tmp_path / "t"
    write_tiny_task(root, "rank_me", n_docs=3, seed=9)
    tasks = load_tasks(["rank_me"], [str(root)])
    down, unembed = down_weights(llm), unembedding(loaded).detach()
    tokenizer = loaded.processor.tokenizer
    ranking = FirstOccurrenceRanking(llm.info, down, unembed, 5, word_starts(tokenizer))
    samples = domain_samples(tasks, ["rank_me"], None)
    generations = [
        g for b in generate(loaded, tasks, samples, None, 6, 1, ranking, components) for g in b
    ]
    lists = {(e["image"], e["token"]): e for e in ranking.lists_json(str)}
    for image, generation in enumerate(generations):
        # Independent: the activations of one greedy run, captured at every step.
        steps: list[torch.Tensor] = []

        def keep(_m, _a, out, store=steps):
            store.append(out[:, -1].clone())

        with torch.inference_mode():
            hooks = [m.register_forward_hook(keep) for m in llm.modules]
            inputs = loaded.adapter.build_inputs(
                loaded.processor, [tasks["rank_me"].eval_docs[image]["image"].convert("RGB")],
                [tasks["rank_me"].eval_docs[image]["question"]],
            )  # fmt: skip
            loaded.model.generate(**inputs, max_new_tokens=len(generation.tokens),
                                  do_sample=False, num_beams=1)  # fmt: skip
            for h in hooks:
                h.remove()
        layers = llm.info.layers
        firsts = {}
        for position, token in enumerate(generation.tokens):
            if token not in firsts and token not in tokenizer.all_special_ids:
                firsts[token] = position
        assert {t for (i, t) in lists if i == image} == set(firsts)
        for token, position in firsts.items():
            a = torch.stack([steps[position * layers + layer][0] for layer in range(layers)])
            score = torch.stack(
                [
                    a[layer] * (unembed[token].float() @ down[layer].float())
                    for layer in range(layers)
                ]
            ).flatten()
            expected = torch.sort(score, descending=True, stable=True).indices[:5]
            got = lists[(image, token)]["neurons"]
            assert [[int(i) // llm.info.width, int(i) % llm.info.width] for i in expected] == got


def test_noise_is_seeded_added_and_removed_exactly(tiny_llava_next):
    loaded = load_model(str(tiny_llava_next))
    components = loaded.adapter.resolve(loaded.model)
    llm = llm_component(components)
    selected = torch.zeros(llm.info.layers, llm.info.width, dtype=torch.bool)
    selected[0, [1, 5]] = True
    selected[1, 7] = True
    identity = model_identity(loaded, str(tiny_llava_next))
    before = [w.clone() for w in down_weights(llm)]
    one = noise_edit(llm, selected, 0.5, torch.Generator().manual_seed(3), identity)
    two = noise_edit(llm, selected, 0.5, torch.Generator().manual_seed(3), identity)
    assert all(torch.equal(a.delta, b.delta) for a, b in zip(one.edits, two.edits, strict=True))
    with one.applied(loaded.model):
        for layer, w in enumerate(down_weights(llm)):
            columns = selected[layer].nonzero().flatten()
            changed = (w != before[layer]).any(0).nonzero().flatten()
            assert torch.equal(changed, columns)
        edit0 = one.edits[0]
        torch.testing.assert_close(
            down_weights(llm)[0][:, edit0.columns], before[0][:, edit0.columns] + edit0.delta
        )
    assert all(torch.equal(w, b) for w, b in zip(down_weights(llm), before, strict=True))
    # The paper's random control draws from all neurons, the selected ones included.
    pool = torch.ones_like(selected)
    draws = [random_neurons(pool, 3, torch.Generator().manual_seed(s)) for s in range(200)]
    assert any((d & selected).any() for d in draws)


def test_unused_layers_are_counted_and_can_be_left_out(tiny_llava_next, prompted, tmp_path):
    stats = tmp_path / "s.stats.safetensors"
    run = CliRunner(env={"COLUMNS": "200"}).invoke
    args = ["record", "--pretrained", str(tiny_llava_next), "--include-path", str(prompted),
            "--domain", "a=prompted_shapes", "--limit", "2", "--out", str(stats)]  # fmt: skip
    assert run(build_cli(), args).exit_code == 0
    data = ActivationStats.load(stats)
    data.domains = ["a", "b"]  # a second domain, so that DAPE has something to tell apart
    for c in data.components:
        data.active[c] = torch.cat([data.active[c], data.active[c].flip(-1)])
        data.tokens[c] = torch.cat([data.tokens[c], data.tokens[c]])
        data.sum[c] = torch.cat([data.sum[c], data.sum[c]])
    data.samples = {"a": 2, "b": 2}
    data.documents["b"] = data.documents["a"]
    data.save(stats)
    kept, skipped = tmp_path / "kept.mask.safetensors", tmp_path / "skipped.mask.safetensors"
    result = run(build_cli(), ["select", str(stats), "--top-rate", "0.5", "--out", str(kept)])
    assert result.exit_code == 0, result.output
    mask = NeuronMask.load(kept)
    in_unused = mask.in_unused_layers()["vision"]
    assert in_unused > 0
    assert re.search(rf"│ in unused layers\s*│\s*{in_unused}\s*│", result.stdout)
    result = run(build_cli(), ["select", str(stats), "--top-rate", "0.5", "--skip-unused",
                               "--out", str(skipped)])  # fmt: skip
    assert result.exit_code == 0, result.output
    left = NeuronMask.load(skipped)
    assert left.in_unused_layers()["vision"] == 0 and left.params["skip_unused"]
    for (d, c), m in mask.masks.items():
        expected = m.clone()
        expected[mask.unused.get(c, [])] = False
        assert torch.equal(left.masks[(d, c)], expected)
