"""Weight edits: the update rule, exact removal, the file format, refusals, the effect."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from planted_model import PLANTED_LAYER, PLANTED_NEURON
from safetensors.torch import save_file

from mmneuron_bench.domains.tasks import domain_samples, load_tasks
from mmneuron_bench.errors import FileFormatError, MaskMismatchError, MMNeuronError
from mmneuron_bench.formats.edit import WeightEdit
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.models.loading import load_model, model_identity
from mmneuron_bench.neurons.anatomy import llm_component
from mmneuron_bench.neurons.editing import compute_edit, edit_effects
from mmneuron_bench.neurons.generation import generate
from mmneuron_bench.testing import tiny_image, write_tiny_task

# Top neurons of the hand-made neurons file: (layer, neuron).
NEURONS = [(0, 3), (0, 40), (1, 17), (1, 79)]


def neurons_file(loaded, components, model_meta, word="red", neurons=NEURONS) -> NeuronMask:
    """A contribution mask with one token whose top neurons are `neurons`."""
    token = loaded.processor.tokenizer.convert_tokens_to_ids(word)
    domain = f"tok{token}_{word}"
    masks = {}
    for c in components:
        masks[(domain, c.name)] = torch.zeros(c.info.layers, c.info.width, dtype=torch.bool)
    for layer, neuron in neurons:
        masks[(domain, "llm")][layer, neuron] = True
    tokens = {domain: {"id": token, "piece": word, "text": word}}
    infos = {c.name: c.info for c in components}
    return NeuronMask([domain], infos, model_meta, "contribution", {"tokens": tokens}, None, masks)


@pytest.fixture(scope="module")
def setup(tiny_llava_next):
    loaded = load_model(str(tiny_llava_next))
    components = loaded.adapter.resolve(loaded.model)
    model_meta = model_identity(loaded, str(tiny_llava_next))
    mask = neurons_file(loaded, components, model_meta)
    blue = loaded.processor.tokenizer.convert_tokens_to_ids("blue")
    edit = compute_edit(loaded, components, model_meta, mask, mask.domains[0], blue, 1.5)
    return loaded, components, model_meta, mask, edit


def _inputs(loaded):
    return loaded.adapter.build_inputs(
        loaded.processor, [tiny_image(0), tiny_image(1)], ["what color is it ?", "is it red ?"]
    )


def _logits(loaded, inputs):
    with torch.no_grad():
        return loaded.model(**inputs).logits


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_update_rule_moves_the_source_direction_to_the_target(setup):
    loaded, components, model_meta, mask, edit = setup
    tokenizer = loaded.processor.tokenizer
    u = loaded.model.lm_head.weight.detach()
    u_s = u[tokenizer.convert_tokens_to_ids("red")]
    u_t = u[tokenizer.convert_tokens_to_ids("blue")]
    s, t = u_s / u_s.norm(), u_t / u_t.norm()
    cos = float(s @ t)
    assert [e.module for e in edit.edits] == [
        f"model.language_model.layers.{i}.mlp.down_proj" for i in (0, 1)
    ]
    assert [e.columns.tolist() for e in edit.edits] == [[3, 40], [17, 79]]
    for e in edit.edits:
        layer = int(e.module.split(".")[3])
        w = loaded.model.model.language_model.layers[layer].mlp.down_proj.weight.detach()
        assert torch.equal(e.original, w[:, e.columns])
        new = e.original + e.delta
        along = s @ e.original
        # w'.û_s = (1 - strength (1 - cos)) w.û_s ; w'.û_t = w.û_t + strength (1 - cos) w.û_s
        assert torch.allclose(s @ new, (1 - 1.5 * (1 - cos)) * along, atol=1e-6)
        assert torch.allclose(t @ new, t @ e.original + 1.5 * (1 - cos) * along, atol=1e-6)
        # Nothing changes orthogonally to the two unembeddings.
        basis = torch.linalg.qr(torch.stack([s, t], 1)).Q
        residual = e.delta - basis @ (basis.T @ e.delta)
        assert residual.abs().max() < 1e-6
    zero = compute_edit(loaded, components, model_meta, mask, mask.domains[0], 9, 0.0)
    assert all(not e.delta.any() for e in zero.edits)


def test_apply_then_remove_restores_identical_weights_and_outputs(setup):
    loaded, _, _, _, edit = setup
    inputs = _inputs(loaded)
    before_state, before = _state(loaded.model), _logits(loaded, inputs)
    edit.apply(loaded.model)
    edited = _logits(loaded, inputs)
    assert not torch.equal(edited, before)
    changed = [
        k for k, v in loaded.model.state_dict().items() if not torch.equal(v, before_state[k])
    ]
    assert changed == [f"model.language_model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)]
    edit.remove(loaded.model)
    assert all(torch.equal(v, before_state[k]) for k, v in loaded.model.state_dict().items())
    assert torch.equal(_logits(loaded, inputs), before)
    with pytest.raises(RuntimeError), edit.applied(loaded.model):
        assert torch.equal(_logits(loaded, inputs), edited)
        raise RuntimeError("inside")
    assert torch.equal(_logits(loaded, inputs), before)


def test_save_and_load_round_trip(setup, tmp_path):
    loaded, _, _, _, edit = setup
    path = tmp_path / "x.edit.safetensors"
    edit.save(path)
    again = WeightEdit.load(path)
    assert again.model == edit.model and again.params == edit.params
    for a, b in zip(again.edits, edit.edits, strict=True):
        assert a.module == b.module
        assert torch.equal(a.columns, b.columns) and torch.equal(a.original, b.original)
        assert torch.equal(a.delta, b.delta)
    inputs = _inputs(loaded)
    with edit.applied(loaded.model):
        direct = _logits(loaded, inputs)
    with again.applied(loaded.model):
        assert torch.equal(_logits(loaded, inputs), direct)
    assert [p.name for p in tmp_path.iterdir()] == ["x.edit.safetensors"]


def test_refusals_change_nothing(setup, tiny_llava):
    loaded, _, _, _, edit = setup
    state = _state(loaded.model)
    with pytest.raises(MMNeuronError, match="the edit is not applied"):
        edit.remove(loaded.model)
    edit.apply(loaded.model)
    with pytest.raises(MMNeuronError, match="the edit is applied already"):
        edit.apply(loaded.model)
    edit.remove(loaded.model)
    other = load_model(str(tiny_llava))
    other_state = _state(other.model)
    with pytest.raises(MaskMismatchError, match="the edit was made on another model"):
        edit.apply(other.model)
    assert all(torch.equal(v, other_state[k]) for k, v in other.model.state_dict().items())
    wide = replace(edit.edits[1], columns=edit.edits[1].columns + 100)
    too_wide = WeightEdit(edit.model, edit.params, [edit.edits[0], wide])
    with pytest.raises(MaskMismatchError, match="does not fit"):
        too_wide.apply(loaded.model)
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())


def test_a_damaged_file_is_a_one_line_error(setup, tmp_path):
    _, _, _, _, edit = setup
    path = tmp_path / "bad.edit.safetensors"
    edit.save(path)
    tensors = {
        "0.columns": edit.edits[0].columns,
        "0.original": edit.edits[0].original,
        "0.delta": edit.edits[0].delta[:, :1].contiguous(),
    }
    save_file(tensors, path, metadata={"format": "mmneuron-edit/1", "model": "{}", "params": "{}",
                                       "modules": '["m"]'})  # fmt: skip
    with pytest.raises(FileFormatError, match="disagree in shape"):
        WeightEdit.load(path)
    save_file(tensors, path, metadata={"format": "mmneuron-mask/1"})
    with pytest.raises(FileFormatError, match="not a mmneuron-edit/1 file"):
        WeightEdit.load(path)


def test_editing_the_planted_neuron_moves_red_to_blue(planted, tmp_path):
    write_tiny_task(tmp_path, "tiny_e", n_docs=3, seed=5)
    tasks = load_tasks(["tiny_e"], [str(tmp_path)])
    loaded = load_model(str(planted))
    components = loaded.adapter.resolve(loaded.model)
    model_meta = model_identity(loaded, str(planted))
    mask = neurons_file(loaded, components, model_meta, neurons=[(PLANTED_LAYER, PLANTED_NEURON)])
    blue = loaded.processor.tokenizer.convert_tokens_to_ids("blue")
    edit = compute_edit(loaded, components, model_meta, mask, mask.domains[0], blue, 1.0)
    # At strength 1 the planted column (red's unit unembedding) becomes blue's exactly.
    down = llm_component(components).outputs[PLANTED_LAYER]
    u_t = loaded.model.lm_head.weight[blue].detach()
    assert torch.allclose(edit.edits[0].edited()[:, 0], u_t / u_t.norm(), atol=1e-6)
    samples = domain_samples(tasks, ["tiny_e"], None)
    generations = [g for b in generate(loaded, tasks, samples, None, 2) for g in b]
    effects = edit_effects(loaded, tasks, generations, edit, None, 2)
    at = effects["source_positions"]
    assert at["count"] == 6
    assert at["p_source_before"] > 0.9 and at["p_source_after"] < 0.1
    assert at["p_target_after"] > 20 * at["p_target_before"]
    assert at["argmax_source_after"] == 1.0, "red still beats the 71 near-uniform tokens"
    # At strength 2 the neuron writes against red and toward blue: blue wins everywhere.
    edit = compute_edit(loaded, components, model_meta, mask, mask.domains[0], blue, 2.0)
    effects = edit_effects(loaded, tasks, generations, edit, None, 2)
    assert effects["source_positions"]["argmax_target_after"] == 1.0
    assert effects["samples"] == {
        "with_source": 3,
        "with_source_output_changed": 1.0,
        "without_source": 0,
        "without_source_output_changed": None,
    }
    assert torch.equal(down.weight[:, PLANTED_NEURON], edit.edits[0].original[:, 0])
