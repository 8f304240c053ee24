"""Built-in adapters on tiny real checkpoints: components, hooks, token roles, loud failures."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from mmneuron_bench.cli import build_cli
from mmneuron_bench.errors import AdapterError
from mmneuron_bench.models.adapter import IMAGE, PAD, TEXT
from mmneuron_bench.models.hookcheck import check_hooks_fire, example_inputs, fired_layers
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.testing import tiny_image

LLAVA_COMPONENTS = {
    "vision": {"role": "vision", "layers": 3, "width": 48},
    "projector": {"role": "connector", "layers": 1, "width": 40},
    "llm": {"role": "llm", "layers": 2, "width": 80},
}
EXPECTED = {
    "llava_next": LLAVA_COMPONENTS,
    "llava": LLAVA_COMPONENTS,
    "instructblip": {
        "vision": {"role": "vision", "layers": 3, "width": 48},
        "qformer_query": {"role": "connector", "layers": 4, "width": 56},
        "qformer_text": {"role": "connector", "layers": 4, "width": 56},
        "llm": {"role": "llm", "layers": 2, "width": 80},
    },
}
UNUSED_VISION_LAYERS = {"llava_next": [2], "llava": [2], "instructblip": []}
IMAGE_TOKENS = {"llava_next": 36, "llava": 16, "instructblip": 6}


def _cli(*args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), list(args))


@pytest.mark.parametrize("family", sorted(EXPECTED))
@pytest.mark.parametrize("check", [False, True], ids=["skeleton", "loaded"])
def test_adapters_command_lists_components(tiny_checkpoint_dir, family, check):
    args = ["adapters", "--pretrained", str(tiny_checkpoint_dir[family]), "--json"]
    result = _cli(*args, *(["--check"] if check else []))
    assert result.exit_code == 0, result.output
    components = json.loads(result.stdout)
    assert {
        name: {k: c[k] for k in ("role", "layers", "width")} for name, c in components.items()
    } == EXPECTED[family]
    assert components["vision"]["unused_layers"] == UNUSED_VISION_LAYERS[family]


def test_adapters_command_prints_a_table(tiny_llava_next):
    result = _cli("adapters", "--pretrained", str(tiny_llava_next))
    assert result.exit_code == 0, result.output
    for text in ("projector", "connector", "model.language_model.layers.{i}.mlp.act_fn"):
        assert text in result.output


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_every_component_layer_fires(tiny_checkpoint_dir, family):
    loaded = load_model(str(tiny_checkpoint_dir[family]))
    assert loaded.adapter.name == family
    components = loaded.adapter.resolve(loaded.model)
    fired = fired_layers(loaded, components, example_inputs(loaded, batch=2))
    for component in components:
        assert fired[component.name] == set(range(component.info.layers)), component.name
    check_hooks_fire(loaded, components)


# Each component's output projection (the Linear reading the neurons), written out by hand.
OUTPUTS = {
    "llava": {
        "vision": lambda m, i: m.model.vision_tower.encoder.layers[i].mlp.fc2,
        "projector": lambda m, i: m.model.multi_modal_projector.linear_2,
        "llm": lambda m, i: m.model.language_model.layers[i].mlp.down_proj,
    },
    "instructblip": {
        "vision": lambda m, i: m.vision_model.encoder.layers[i].mlp.fc2,
        "qformer_query": lambda m, i: m.qformer.encoder.layer[i].output_query.dense,
        "qformer_text": lambda m, i: m.qformer.encoder.layer[i].output.dense,
        "llm": lambda m, i: m.language_model.model.layers[i].mlp.down_proj,
    },
}
OUTPUTS["llava_next"] = OUTPUTS["llava"]


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_adapters_declare_each_output_projection(tiny_checkpoint_dir, family):
    loaded = load_model(str(tiny_checkpoint_dir[family]))
    for component in loaded.adapter.resolve(loaded.model):
        layers = range(component.info.layers)
        expected = [OUTPUTS[family][component.name](loaded.model, i) for i in layers]
        assert all(a is b for a, b in zip(component.outputs, expected, strict=True))
        assert all(o.in_features == component.info.width for o in component.outputs)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_token_roles_mark_image_text_and_padding(tiny_checkpoint_dir, family):
    loaded = load_model(str(tiny_checkpoint_dir[family]))
    questions = ["what color is the circle ?", "is there a red square on the left of the image ?"]
    inputs = loaded.adapter.build_inputs(
        loaded.processor, [tiny_image(0), tiny_image(1)], questions
    )
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    assert roles.shape == inputs["input_ids"].shape
    assert ((roles == IMAGE).sum(1) == IMAGE_TOKENS[family]).all()
    assert torch.equal(roles == PAD, inputs["attention_mask"] == 0)
    assert (roles[0] == PAD).sum() > 0, "the shorter prompt is padded"
    assert (roles == TEXT).sum(1).tolist() == (
        inputs["attention_mask"].sum(1) - IMAGE_TOKENS[family]
    ).tolist()


def test_a_missing_module_fails_naming_its_path(tiny_llava_next):
    loaded = load_model(str(tiny_llava_next))
    del loaded.model.model.multi_modal_projector.act
    with pytest.raises(AdapterError) as info:
        loaded.adapter.resolve(loaded.model)
    message = str(info.value)
    assert "'model.multi_modal_projector.act' not found" in message
    assert "'model.multi_modal_projector' exists but has no 'act'" in message
    assert "\n" not in message


def test_a_renamed_layer_list_fails_naming_its_path(tiny_instructblip):
    loaded = load_model(str(tiny_instructblip))
    qformer_encoder = loaded.model.qformer.encoder
    qformer_encoder.layers = qformer_encoder.layer
    del qformer_encoder.layer
    with pytest.raises(AdapterError, match=r"'qformer\.encoder\.layer' not found"):
        loaded.adapter.resolve(loaded.model)


class _FusedGatedMLP(nn.Module):
    """A gated MLP computed without calling its `act_fn` module, as a fused kernel would."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.act_fn = mlp.act_fn

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def test_a_hook_that_never_fires_fails_naming_the_module(tiny_llava):
    loaded = load_model(str(tiny_llava))
    layer = loaded.model.model.language_model.layers[1]
    layer.mlp = _FusedGatedMLP(layer.mlp)
    components = loaded.adapter.resolve(loaded.model)
    with pytest.raises(
        AdapterError, match=r"'model\.language_model\.layers\.1\.mlp\.act_fn' never fired"
    ):
        check_hooks_fire(loaded, components)


def test_bad_model_path_is_a_one_line_error(tmp_path):
    result = _cli("adapters", "--pretrained", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot load model config from")
    assert result.output.count("\n") == 1


def test_adapter_that_does_not_handle_the_model_is_refused(tiny_instructblip):
    result = _cli("adapters", "--pretrained", str(tiny_instructblip), "--model", "llava")
    assert result.exit_code == 1
    assert "adapter 'llava' does not handle model type 'instructblip'" in result.output


def test_fingerprint_ignores_the_load_dtype(tiny_llava_next, tiny_llava):
    from mmneuron_bench.models.loading import model_identity

    def fingerprint(path, dtype):
        loaded = load_model(str(path), dtype=dtype)
        return model_identity(loaded, str(path))["fingerprint"]

    assert fingerprint(tiny_llava_next, torch.float32) == fingerprint(
        tiny_llava_next, torch.bfloat16
    )
    assert fingerprint(tiny_llava_next, torch.float32) != fingerprint(tiny_llava, torch.float32)
