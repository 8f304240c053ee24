"""Tests for mmneuron_bench.mini_model and the shipped checkpoint: it is the architecture the
code builds, it loads through from_pretrained, our adapter and lmms-eval's llava_hf, and it
answers held-out synthetic questions far above chance."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoProcessor, LlavaNextForConditionalGeneration

from mmneuron_bench.models.loading import load_model
from mmneuron_bench.plugins.registry import get_registry
from mmneuron_bench.synthetic.cache import CACHE_ENV
from mmneuron_bench.synthetic.generate import DOMAINS, chance_level, generate
from mmneuron_bench.synthetic.mini_model import (
    MINI_MODEL_DIR,
    answer,
    load_mini_model,
    mini_config,
    mini_tokenizer,
    new_mini_model,
)
from mmneuron_bench.synthetic.scoring import is_correct
from mmneuron_bench.tasks import TASKS_DIR

# Eval samples per domain asked in these tests: 10 of each of the 3 question types.
N_ASKED = 30


@pytest.fixture(scope="module")
def mini():
    return load_mini_model()


def test_checkpoint_is_shipped_small_and_complete():
    files = {f.name: f.stat().st_size for f in MINI_MODEL_DIR.iterdir()}
    assert {"model.safetensors", "config.json", "eval_accuracy.json"} <= set(files)
    assert {"tokenizer.json", "processor_config.json"} <= set(files)
    assert sum(files.values()) < 6_000_000


def test_checkpoint_is_the_architecture_the_code_builds(mini):
    model, processor = mini
    assert isinstance(model, LlavaNextForConditionalGeneration)
    expected = mini_config()
    for part in ("vision_config", "text_config"):
        got, want = getattr(model.config, part), getattr(expected, part)
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size"):
            assert getattr(got, key, None) == getattr(want, key, None), (part, key)
    assert processor.tokenizer.get_vocab() == mini_tokenizer().get_vocab()
    reference = new_mini_model(0)
    assert {n: p.shape for n, p in model.named_parameters()} == {
        n: p.shape for n, p in reference.named_parameters()
    }
    assert 0.8e6 < sum(p.numel() for p in model.parameters()) < 1.2e6


def test_processor_gives_llava_next_inputs(mini):
    model, processor = mini
    sample = generate("common", "eval", 0)
    adapter = get_registry().adapter("llava_next")
    inputs = adapter.build_inputs(processor, [sample.image], [sample.question])
    assert inputs["pixel_values"].shape == (1, 2, 3, 32, 32)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 36
    assert processor.tokenizer.unk_token_id not in inputs["input_ids"][0].tolist()


def _accuracy(model, processor, domain: str, n: int = N_ASKED) -> float:
    samples = [generate(domain, "eval", i) for i in range(n)]
    predictions = answer(
        model, processor, [s.image for s in samples], [s.question for s in samples]
    )
    return sum(map(is_correct, predictions, [s.answer for s in samples])) / len(samples)


@pytest.mark.parametrize("domain", DOMAINS)
def test_answers_held_out_questions_far_above_chance(mini, domain):
    model, processor = mini
    assert _accuracy(model, processor, domain) >= chance_level(domain) + 0.3


def test_reported_accuracy_is_far_above_chance_on_every_domain():
    report = json.loads((MINI_MODEL_DIR / "eval_accuracy.json").read_text())
    assert set(report["accuracy"]) == set(DOMAINS)
    for domain in DOMAINS:
        assert report["chance"][domain] == pytest.approx(chance_level(domain))
        assert report["accuracy"][domain] >= chance_level(domain) + 0.3


def test_loads_through_the_adapter_and_answers_alike(mini):
    loaded = load_model(str(MINI_MODEL_DIR))
    assert loaded.adapter.name == "llava_next"
    shapes = {c.name: (c.info.layers, c.info.width) for c in loaded.adapter.resolve(loaded.model)}
    assert shapes == {"vision": (3, 256), "projector": (1, 128), "llm": (3, 512)}
    samples = [generate("medical", "eval", i) for i in range(6)]
    args = [s.image for s in samples], [s.question for s in samples]
    assert answer(loaded.model, loaded.processor, *args) == answer(*mini, *args)


def test_batched_answers_equal_one_at_a_time(mini):
    """Left padding in a batch changes no answer (the tasks' questions differ in length)."""
    samples = [generate("remote", "eval", i) for i in range(3)]
    samples += [generate("documents", "eval", i) for i in range(3)]
    images, texts = [s.image for s in samples], [s.question for s in samples]
    one_by_one = [answer(*mini, [im], [t])[0] for im, t in zip(images, texts, strict=True)]
    assert answer(*mini, images, texts) == one_by_one


def test_evaluates_through_lmms_eval_llava_hf(mini, tmp_path, monkeypatch):
    """lmms-eval builds its own llava_hf from the checkpoint and scores the synthetic tasks
    exactly as our own greedy answers on the same documents score."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from mmneuron_bench.lmms import workarounds

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    cls = workarounds.import_base("llava_hf")
    args = {"pretrained": str(MINI_MODEL_DIR), "device": "cpu", "dtype": "float32"}
    lm = cls(**workarounds.base_kwargs(cls, args))
    assert isinstance(lm.model, LlavaNextForConditionalGeneration)
    assert isinstance(lm._image_processor, type(AutoProcessor.from_pretrained(MINI_MODEL_DIR)))
    manager = TaskManager(include_path=str(TASKS_DIR / "synthetic"), include_defaults=False)
    names = [f"mmneuron_synth_{d}_eval" for d in DOMAINS]
    with torch.no_grad():
        out = simple_evaluate(
            model=lm, tasks=names, limit=12, task_manager=manager, log_samples=False
        )
    for name, domain in zip(names, DOMAINS, strict=True):
        assert out["results"][name]["exact_match,none"] == _accuracy(*mini, domain, 12), name


def _training_script():
    import importlib.util

    path = MINI_MODEL_DIR.parents[2] / "scripts" / "train_mini_model.py"
    spec = importlib.util.spec_from_file_location("train_mini_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_is_deterministic_from_its_seed():
    """Two short runs of the training script's loop from the same seed give identical
    weights (the shipped model is 2400 such steps); another seed gives other weights."""
    from argparse import Namespace

    from mmneuron_bench.synthetic.mini_model import mini_processor

    script = _training_script()
    processor = mini_processor()
    adapter = get_registry().adapter("llava_next")
    samples = [generate(d, "train", i) for d in DOMAINS for i in range(4)]
    texts = [
        f"{adapter.format_prompt(processor, s.question)} {s.answer}{processor.tokenizer.eos_token}"
        for s in samples
    ]
    data = dict(
        processor(images=[s.image for s in samples], text=texts, padding=True, return_tensors="pt")
    )
    data["weights"] = torch.zeros(data["input_ids"].shape)
    data["weights"][:, -2:] = 1.0  # the one-word answer and </s>, as the script weighs them

    def weights(seed: int) -> dict[str, torch.Tensor]:
        model = new_mini_model(seed)
        args = Namespace(seed=seed, steps=3, batch_size=8, lr=2e-3)
        script.train(model, data, args)
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not torch.equal(first["lm_head.weight"], new_mini_model(0).lm_head.weight)
    assert not all(torch.equal(first[n], other[n]) for n in first)
