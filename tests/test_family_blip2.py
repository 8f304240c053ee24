"""BLIP-2: the language model's paths chosen from the config (OPT, Llama-style), Flan-T5 refused,
query tokens in front of the padding, left padding, OPT's flattened activations."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from transformers import Blip2Config, OPTConfig, T5Config

from mmneuron_bench.cli import build_cli
from mmneuron_bench.models.adapter import IMAGE, PAD, TEXT
from mmneuron_bench.models.hookcheck import check_hooks_fire
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.neurons.generation import _LastPositions
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.testing import tiny_image
from mmneuron_bench.testing.families.blip2 import (
    LLAMA_COMPONENTS,
    NUM_QUERY_TOKENS,
    build_tiny_blip2_llama,
)

QUESTIONS = ["what color is the circle ?", "is there a red square on the left of the image ?"]


def _cli(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), [str(a) for a in args])


@pytest.fixture(scope="module")
def opt(tiny_checkpoint_dir):
    return load_model(str(tiny_checkpoint_dir["blip2"]))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_model(str(build_tiny_blip2_llama(tmp_path_factory.mktemp("blip2_llama"))))


def _inputs(loaded, n=2):
    images = [tiny_image(i, (32, 32) if i % 2 else (48, 24)) for i in range(n)]
    return loaded.adapter.build_inputs(loaded.processor, images, QUESTIONS[:n])


def _record(loaded, inputs) -> ActivationRecorder:
    components = loaded.adapter.resolve(loaded.model)
    recorder = ActivationRecorder(components, 1, "cpu")
    recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs))
    with recorder.hooks(), torch.inference_mode():
        loaded.model(**loaded.adapter.forward_kwargs(inputs))
    return recorder


def test_query_tokens_are_image_tokens_in_front_of_left_padding(opt):
    assert opt.processor.tokenizer.padding_side == "right"  # as the real checkpoints
    inputs = _inputs(opt)
    roles = opt.adapter.token_roles(opt.model, inputs)
    assert (roles == IMAGE).sum(dim=1).tolist() == [NUM_QUERY_TOKENS] * 2
    assert (roles[:, :NUM_QUERY_TOKENS] == IMAGE).all()
    assert (roles[0] == PAD).any() and not (roles[1] == PAD).any()
    assert inputs["attention_mask"][:, -1].all()  # left padding: every sample ends the batch
    assert ((roles == TEXT) == (inputs["attention_mask"].bool() & (roles != IMAGE))).all()


def test_opt_paths_and_its_flattened_activations(opt):
    components = opt.adapter.resolve(opt.model)
    llm = components[-1]
    assert llm.module_path(0) == "language_model.model.decoder.layers.0.activation_fn"
    assert opt.adapter.language_model(opt.model).final_norm is (
        opt.model.language_model.model.decoder.final_layer_norm
    )
    inputs = _inputs(opt)
    batch, seq = inputs["input_ids"].shape
    seen = []
    capture = _LastPositions([llm.modules[0]])
    handle = llm.modules[0].register_forward_hook(lambda _m, _a, out: seen.append(out.clone()))
    try:
        with capture.hooks(batch), torch.inference_mode():
            opt.model(**opt.adapter.forward_kwargs(inputs))
    finally:
        handle.remove()
    assert seen[0].shape == (batch * seq, llm.info.width)  # OPT runs its MLP on [B*S, H]
    last = capture.take()[0, :, 0]
    assert torch.equal(last, seen[0].reshape(batch, seq, -1)[:, -1])


def test_llama_language_model_paths_come_from_the_config(llama):
    components = llama.adapter.resolve(llama.model)
    assert {c.name: (c.role, c.info.layers, c.info.width) for c in components} == LLAMA_COMPONENTS
    assert components[-1].module_path(1) == "language_model.model.layers.1.mlp.act_fn"
    parts = llama.adapter.language_model(llama.model)
    assert parts.final_norm is llama.model.language_model.model.norm
    assert len(parts.layers) == 2
    check_hooks_fire(llama, components)


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_a_padded_batch_counts_what_its_samples_count_alone(family, request):
    """The padding sits between the query tokens and the text: a RoPE language model needs the
    position ids that skip it."""
    loaded = request.getfixturevalue(family)
    batched = _record(loaded, _inputs(loaded))
    images = [tiny_image(i, (32, 32) if i % 2 else (48, 24)) for i in range(2)]
    alone = [
        _record(loaded, loaded.adapter.build_inputs(loaded.processor, [image], [question]))
        for image, question in zip(images, QUESTIONS, strict=True)
    ]
    for name in batched.active:
        assert torch.equal(batched.tokens[name], alone[0].tokens[name] + alone[1].tokens[name])
        assert torch.equal(batched.active[name], alone[0].active[name] + alone[1].active[name])


def _config_folder(tmp_path, name, config) -> str:
    folder = tmp_path / name
    config.save_pretrained(folder)
    return str(folder)


def test_flan_t5_is_refused_in_one_line(tmp_path):
    config = Blip2Config(
        text_config=T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2).to_dict(),
        use_decoder_only_language_model=False,
    )
    result = _cli("adapters", "--pretrained", _config_folder(tmp_path, "t5", config))
    assert result.exit_code == 1
    assert "encoder-decoder language model (Flan-T5) is not supported" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_opt_with_a_projection_before_the_lm_head_is_refused(tmp_path):
    text = OPTConfig(hidden_size=32, word_embed_proj_dim=16, ffn_dim=64, num_hidden_layers=1,
                     num_attention_heads=2)  # fmt: skip
    folder = _config_folder(tmp_path, "opt350", Blip2Config(text_config=text.to_dict()))
    result = _cli("adapters", "--pretrained", folder)
    assert result.exit_code == 1
    assert "OPT-350m style" in result.output


def test_full_size_opt_lists_the_opt_mlp(tmp_path):
    from mmneuron_bench.testing.families import FULL_CONFIGS

    folder = FULL_CONFIGS / "Salesforce-blip2-opt-2.7b"
    result = _cli("adapters", "--pretrained", folder, "--json")
    assert result.exit_code == 0, result.output
    llm = json.loads(result.stdout)["llm"]
    assert llm["module"] == "language_model.model.decoder.layers.{i}.activation_fn"
