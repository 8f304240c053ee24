"""PaliGemma: the prefix layout, no ``labels``, 1-based positions, ``token_type_ids`` (the
continuation of a loglikelihood is the causal suffix), the soft-capped logit lens, and the
one-line answers for what it lacks (an lmms-eval model, connector neurons)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.analysis.logit_lens import lens_entropies
from mmneuron_bench.cli import build_cli
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.interventions.targets import check_module_set, runnable_module_sets
from mmneuron_bench.lmms.loglikelihood import continuation_nll
from mmneuron_bench.lmms.model import pick_base
from mmneuron_bench.models.adapter import IMAGE
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.testing import tiny_image


@pytest.fixture(scope="module")
def path(tiny_checkpoint_dir):
    return tiny_checkpoint_dir["paligemma"]


@pytest.fixture(scope="module")
def loaded(path):
    return load_model(str(path))


def test_prompt_layout_without_labels(loaded):
    processor = loaded.processor
    images = [tiny_image(1), tiny_image(2, (48, 24))]
    inputs = loaded.adapter.build_inputs(processor, images, ["what color ?", "is the circle red ?"])
    assert "labels" not in inputs
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids", "pixel_values"}
    # The whole prompt is the bidirectional prefix (type 0).
    assert not inputs["token_type_ids"].any()
    image_id = loaded.model.config.image_token_id
    for row, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        real = row[mask.bool()].tolist()
        assert real[:16] == [image_id] * 16 and real[16] == processor.tokenizer.bos_token_id
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    assert (roles == IMAGE).sum(-1).tolist() == [16, 16]


def test_positions_are_the_models_own_one_based_positions(loaded):
    inputs = loaded.adapter.build_inputs(loaded.processor, [tiny_image(3)], ["what shape ?"])
    positions = loaded.adapter.position_ids(inputs)
    assert positions[0].tolist() == list(range(1, inputs["input_ids"].shape[1] + 1))
    with torch.inference_mode():
        ours = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
        own = loaded.model(**inputs).logits
    assert torch.equal(ours, own)


def test_logit_lens_applies_the_soft_cap(loaded):
    """The lens of the last layer is the model's own (soft-capped) next-token distribution."""
    inputs = loaded.adapter.build_inputs(loaded.processor, [tiny_image(4)], ["is it blue ?"])
    lens = lens_entropies(loaded, inputs)[-1, 0]
    with torch.inference_mode():
        logits = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits[0].float()
    probs = logits.softmax(-1)
    own = torch.special.entr(probs).sum(-1).double()
    assert torch.allclose(lens, own, atol=1e-5)
    parts = loaded.adapter.language_model(loaded.model)
    with torch.inference_mode():
        hidden = torch.randn(3, parts.lm_head.in_features) * 50
        capped = parts.logits(hidden)
        raw = parts.lm_head(parts.final_norm(hidden))
    assert capped.abs().max() < 30 and torch.allclose(capped, 30 * torch.tanh(raw / 30))


def test_loglikelihood_scores_the_continuation_as_the_suffix(loaded):
    """The processor's own suffix (token type 1) gives the same NLL as continuation_nll."""
    processor, image, question = loaded.processor, tiny_image(5), "what color is the circle ?"
    nll, _ = continuation_nll(loaded.adapter, processor, loaded.model, image, question, " red")
    prompt = loaded.adapter.format_prompt(processor, question)
    whole = processor(images=[image], text=[prompt], suffix=["red"], return_tensors="pt")
    whole.pop("labels")
    assert whole["token_type_ids"][0, -2:].tolist() == [1, 1]  # red, <eos>
    with torch.inference_mode():
        logits = loaded.model(**whole).logits
    red = processor.tokenizer.convert_tokens_to_ids("red")
    assert whole["input_ids"][0, -2] == red
    expected = -logits[0, -3].float().log_softmax(-1)[red]
    assert nll == pytest.approx(float(expected), abs=1e-5)


def test_run_without_base_says_why(path):
    with pytest.raises(MMNeuronError, match="names no lmms-eval model; give base=NAME") as info:
        pick_base(str(path))
    assert "no PaliGemma model" in str(info.value)


def test_connector_module_sets(loaded, path):
    adapter = loaded.adapter
    with pytest.raises(MMNeuronError, match="has no connector neurons .*single Linear"):
        check_module_set("connector", adapter)
    assert check_module_set("all", adapter) == ("vision", "connector", "llm")
    kept, left_out = runnable_module_sets(["none", "vision+connector", "llm", "all"], adapter)
    assert kept == ["none", "llm", "all"] and list(left_out) == ["vision+connector"]
    listed = CliRunner().invoke(build_cli(), ["adapters", "--json"])
    entry = next(a for a in json.loads(listed.output) if a["name"] == "paligemma")
    assert "connector" in entry["no_neurons"] and entry["lmms_eval_model"] is None
