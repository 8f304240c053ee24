"""Llama 3.2 Vision: no image tokens in the language model's sequence, padding tiles, the rows a
cross-attention layer discards, text-only inputs, prompts, and its lmms-eval model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.interventions.base import Target
from mmneuron_bench.interventions.mask import MaskIntervention
from mmneuron_bench.models.adapter import PAD, TEXT
from mmneuron_bench.models.hooks import forward_hooks
from mmneuron_bench.models.loading import load_model, model_identity
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.testing import tiny_image, write_tiny_task
from mmneuron_bench.testing.families.mllama import (
    CROSS_ATTENTION_LAYERS,
    IMAGE_TOKEN,
    PADDED_TILE_ROWS,
    TILE_ROWS,
)

QUESTIONS = ["what color is the circle ?", "is there a red square on the left of the image ?"]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint_dir):
    return load_model(str(tiny_checkpoint_dir["mllama"]))


def _inputs(loaded, sizes=((16, 16), (32, 16))):
    images = [tiny_image(i, size) for i, size in enumerate(sizes)]
    return loaded.adapter.build_inputs(loaded.processor, images, QUESTIONS[: len(sizes)])


def _cli(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), [str(a) for a in args])


def test_prompts_have_one_bos_and_one_image_marker_per_sample(loaded):
    inputs = _inputs(loaded)
    tokenizer = loaded.processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        real = ids[mask.bool()]
        assert int((real == tokenizer.bos_token_id).sum()) == 1
        assert int(real[0]) == tokenizer.bos_token_id
        assert int((real == image_id).sum()) == 1
    assert not inputs["attention_mask"][:, -1].eq(0).any()  # left padding
    # One image per sample, nested: a 1-tile and a 2-tile image in one batch.
    assert inputs["aspect_ratio_mask"].sum(-1).flatten().tolist() == [1, 2]


def test_the_image_marker_is_text_and_there_are_no_image_tokens(loaded):
    inputs = _inputs(loaded)
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    assert set(roles.unique().tolist()) == {PAD, TEXT}
    assert torch.equal(roles == PAD, inputs["attention_mask"] == 0)


def test_token_scope_image_is_refused(loaded, tiny_checkpoint_dir, tmp_path):
    with pytest.raises(MMNeuronError, match="no image tokens"):
        loaded.adapter.positions(loaded.model, _inputs(loaded), "image")
    write_tiny_task(tmp_path / "tasks", "mllama_scope", n_docs=1)
    out = tmp_path / "s.stats.safetensors"
    result = _cli("record", "--pretrained", tiny_checkpoint_dir["mllama"], "--domain",
                  "d=mllama_scope", "--include-path", tmp_path / "tasks", "--token-scope",
                  "image", "--out", out)  # fmt: skip
    assert result.exit_code == 1
    assert "--token-scope image: Llama 3.2 Vision has no image tokens" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_vision_rows_are_the_real_tiles_without_their_padding_rows(loaded):
    inputs = _inputs(loaded)
    tiles = loaded.adapter.positions(loaded.model, inputs)["vision_tiles"]
    assert tiles.shape == (2 * 4 * PADDED_TILE_ROWS,)
    per_tile = tiles.reshape(2, 4, PADDED_TILE_ROWS).sum(-1)
    assert per_tile.tolist() == [[TILE_ROWS, 0, 0, 0], [TILE_ROWS, TILE_ROWS, 0, 0]]


def test_padding_rows_of_the_vision_encoders_are_active_but_not_counted(loaded):
    """Half the padding rows have activations > 0: counting every row would be wrong."""
    inputs = _inputs(loaded, sizes=((16, 16),))
    [local, *_] = loaded.adapter.resolve(loaded.model)
    seen = []
    with forward_hooks([(local.modules[0], lambda _m, _a, out: seen.append(out))]):
        with torch.inference_mode():
            loaded.model(**loaded.adapter.forward_kwargs(inputs))
    rows = seen[0].reshape(-1, local.info.width)
    real = loaded.adapter.positions(loaded.model, inputs)["vision_tiles"]
    assert (rows[~real] > 0).any()
    recorder = ActivationRecorder([local], 1, "cpu")
    recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs))
    with recorder.hooks(), torch.inference_mode():
        loaded.model(**loaded.adapter.forward_kwargs(inputs))
    assert recorder.tokens[local.name][0].tolist() == [TILE_ROWS] * local.info.layers
    assert torch.equal(recorder.active[local.name][0, 0], (rows[real] > 0).sum(0))


def test_cross_attention_layer_counts_only_the_rows_whose_mlp_output_it_keeps(loaded):
    inputs = _inputs(loaded)
    kinds = loaded.adapter.positions(loaded.model, inputs)
    [layer] = CROSS_ATTENTION_LAYERS
    image_id = loaded.processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    for b, ids in enumerate(inputs["input_ids"]):
        marker = int((ids == image_id).nonzero()[0])
        expected = torch.arange(len(ids)) >= marker
        assert torch.equal(kinds[f"llm@{layer}"][b], expected)
        assert torch.equal(kinds["llm"][b], inputs["attention_mask"][b].bool())
    # Those rows' neurons do nothing: zeroing all of them leaves the logits exactly as they are.
    [*_, llm] = loaded.adapter.resolve(loaded.model)
    before = ~kinds[f"llm@{layer}"]

    def zero_before(_module, _args, out):
        return out.masked_fill(before.unsqueeze(-1), 0.0)

    with torch.inference_mode():
        plain = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
        with forward_hooks([(llm.modules[layer], zero_before)]):
            zeroed = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
    assert torch.equal(plain, zeroed)


def test_text_only_input_skips_the_cross_attention_layers(loaded):
    processor = loaded.processor
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": QUESTIONS[0]}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], add_special_tokens=False, return_tensors="pt")
    components = loaded.adapter.resolve(loaded.model)
    recorder = ActivationRecorder(components, 1, "cpu")
    recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs))
    with recorder.hooks(), torch.inference_mode():
        loaded.model(**loaded.adapter.forward_kwargs(inputs))
    tokens = recorder.tokens["llm"][0].tolist()
    n = inputs["input_ids"].shape[1]
    assert tokens == [0 if i in CROSS_ATTENTION_LAYERS else n for i in range(len(tokens))]
    assert recorder.tokens["vision_local"].sum() == 0


def test_modules_connector_is_refused_there_are_no_connector_neurons(loaded):
    components = loaded.adapter.resolve(loaded.model)
    infos = {c.name: c.info for c in components}
    masks = {("d", c.name): torch.ones(c.info.layers, c.info.width, dtype=torch.bool)
             for c in components}  # fmt: skip
    model = {"adapter": "mllama", "name_or_path": "x", "fingerprint": "0"}
    mask = NeuronMask(["d"], infos, model, "random", {}, None, masks)
    target = Target(loaded, components, model)
    for modules in ("connector", "vision+connector"):
        with pytest.raises(MMNeuronError, match="adapter 'mllama' has no connector neurons"):
            MaskIntervention(mask, modules=modules, domain="all").attach(target)
    MaskIntervention(mask, modules="vision+llm", domain="all").attach(target)


def test_llama_vision_base_gets_the_attributes_it_never_sets(tiny_checkpoint_dir):
    from mmneuron_bench.lmms.model import MMNeuronLMM

    lm = MMNeuronLMM(pretrained=str(tiny_checkpoint_dir["mllama"]), device="cpu")
    assert lm.base_name == "llama_vision"
    assert lm.batch_size == 1
    assert lm.tokenizer is lm.base.processor.tokenizer
    assert lm.config is lm.model.config
    assert lm.max_length == 512


def test_llama_vision_says_it_answers_one_request_at_a_time(tiny_checkpoint_dir, tmp_path):
    """lmms-eval's llama_vision ignores the batch size: a note says so, and the answers are
    those of batch size 1."""
    write_tiny_task(tmp_path / "tasks", "mllama_batch", n_docs=3, seed=2)
    common = ["run", "--pretrained", tiny_checkpoint_dir["mllama"], "--tasks", "mllama_batch",
              "--include-path", tmp_path / "tasks"]  # fmt: skip
    answers = {}
    for size in (1, 2):
        result = _cli(*common, "--batch-size", size, "--output", tmp_path / str(size))
        assert result.exit_code == 0, result.output
        noted = "'llama_vision' answers one request at a time whatever the batch size"
        assert (noted in result.stderr) == (size == 2)
        lines = (tmp_path / str(size) / "samples_mllama_batch.jsonl").read_text().splitlines()
        answers[size] = [json.loads(line)["resps"] for line in lines]
    assert answers[2] == answers[1] and len(answers[1]) == 3


def test_run_refuses_modules_connector_and_the_grid_has_no_connector_row(
    loaded, tiny_checkpoint_dir, tmp_path
):
    write_tiny_task(tmp_path / "tasks", "mllama_common", n_docs=1, seed=1)
    components = loaded.adapter.resolve(loaded.model)
    masks = {("common", c.name): torch.ones(c.info.layers, c.info.width, dtype=torch.bool)
             for c in components}  # fmt: skip
    model = model_identity(loaded, "x")
    mask = tmp_path / "m.mask.safetensors"
    infos = {c.name: c.info for c in components}
    NeuronMask(["common"], infos, model, "dape", {}, None, masks).save(mask)
    common = ["run", "--pretrained", tiny_checkpoint_dir["mllama"], "--tasks", "mllama_common",
              "--include-path", tmp_path / "tasks", "--mask", mask]  # fmt: skip
    refused = _cli(*common, "--modules", "connector", "--output", tmp_path / "one")
    assert refused.exit_code == 1
    assert "module set 'connector': adapter 'mllama' has no connector neurons" in refused.output
    grid = _cli(*common, "--grid", "--output", tmp_path / "grid")
    assert grid.exit_code == 0, grid.output
    written = json.loads((tmp_path / "grid" / "grid.json").read_text())
    assert written["module_sets"] == ["none", "vision", "llm", "all"]


def test_loglikelihood_extends_the_cross_attention_mask(loaded):
    """The continuation's tokens see the image: the NLL equals that of the processor's own
    inputs for prompt + continuation (whose cross-attention mask covers every token)."""
    from mmneuron_bench.lmms.loglikelihood import continuation_nll

    image, question = tiny_image(3, (32, 16)), QUESTIONS[0]
    nll, _ = continuation_nll(
        loaded.adapter, loaded.processor, loaded.model, image, question, " red"
    )
    prompt = loaded.adapter.format_prompt(loaded.processor, question)
    inputs = loaded.processor(
        images=[[image]], text=[prompt + " red"], add_special_tokens=False, return_tensors="pt"
    )
    red = loaded.processor.tokenizer.convert_tokens_to_ids("red")
    assert int(inputs["input_ids"][0, -1]) == red
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits
    expected = -logits[0, -2].float().log_softmax(-1)[red]
    assert nll == pytest.approx(float(expected), rel=1e-5)
