"""The VipLlava adapter on a tiny offline checkpoint: components, unused layers, hooks, token
roles and recording."""

from __future__ import annotations

import pytest
import torch
from mmneuron_bench.models.adapter import IMAGE, PAD, TEXT
from mmneuron_bench.models.hookcheck import check_hooks_fire, fired_layers
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.testing import tiny_image
from transformers import AutoConfig

from mmneuron_example.testing import COMPONENTS, IMAGE_TOKENS, UNUSED, build_tiny_vipllava
from mmneuron_example.vipllava import VipLlavaAdapter


@pytest.fixture(scope="session")
def tiny_vipllava(tmp_path_factory):
    """Directory of the tiny VipLlava checkpoint, built once per session."""
    return build_tiny_vipllava(tmp_path_factory.mktemp("tiny_vipllava"))


@pytest.fixture(scope="session")
def loaded(tiny_vipllava):
    return VipLlavaAdapter().load(str(tiny_vipllava))


def _described(components):
    return {c.name: (c.role, c.info.layers, c.info.width) for c in components}


def _inputs(loaded, n=2):
    images = [tiny_image(i) for i in range(n)]
    questions = ["What color is the circle?", "How many objects are there in the image?"][:n]
    return loaded.adapter.build_inputs(loaded.processor, images, questions)


def test_adapter_handles_the_config(tiny_vipllava):
    adapter = VipLlavaAdapter()
    adapter.validate()
    assert adapter.handles(AutoConfig.from_pretrained(tiny_vipllava))


def test_checkpoint_is_small(tiny_vipllava):
    assert sum(f.stat().st_size for f in tiny_vipllava.rglob("*") if f.is_file()) < 1_000_000


def test_components_resolve_with_layers_width_and_unused_layers(tiny_vipllava, loaded):
    adapter = VipLlavaAdapter()
    resolved = adapter.resolve(loaded.model)
    assert _described(resolved) == COMPONENTS
    assert {c.name: list(c.unused_layers) for c in resolved if c.unused_layers} == UNUSED
    skeleton = adapter.skeleton(AutoConfig.from_pretrained(tiny_vipllava))
    assert _described(adapter.resolve(skeleton)) == COMPONENTS


def test_the_unused_vision_layer_does_not_reach_the_language_model(loaded):
    """Zeroing every neuron of the unused layer leaves the logits exactly as they are."""
    [vision] = [c for c in loaded.adapter.resolve(loaded.model) if c.name == "vision"]
    inputs = _inputs(loaded)
    with torch.inference_mode():
        plain = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
        handle = vision.modules[3].register_forward_hook(lambda _m, _a, out: out * 0)
        try:
            unused_off = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
        finally:
            handle.remove()
        handle = vision.modules[2].register_forward_hook(lambda _m, _a, out: out * 0)
        try:
            used_off = loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits
        finally:
            handle.remove()
    assert torch.equal(plain, unused_off)
    assert not torch.equal(plain, used_off)


def test_hooks_fire_on_every_layer(loaded):
    components = loaded.adapter.resolve(loaded.model)
    check_hooks_fire(loaded, components)
    fired = fired_layers(loaded, components, _inputs(loaded))
    assert fired == {name: set(range(layers)) for name, (_, layers, _) in COMPONENTS.items()}


def test_token_roles_mark_the_image_tokens(loaded):
    inputs = _inputs(loaded)
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    assert (roles == IMAGE).sum(dim=1).tolist() == [IMAGE_TOKENS] * 2
    assert (roles[0] == PAD).any() and not (roles[1] == PAD).any()
    assert ((roles == TEXT) == (inputs["attention_mask"].bool() & (roles != IMAGE))).all()


def test_recording_counts_a_padded_batch_as_its_samples_alone(loaded):
    components = loaded.adapter.resolve(loaded.model)

    def record(inputs):
        recorder = ActivationRecorder(components, 1, "cpu")
        recorder.set_batch(0, loaded.adapter.positions(loaded.model, inputs))
        with recorder.hooks(), torch.inference_mode():
            loaded.model(**loaded.adapter.forward_kwargs(inputs))
        return recorder

    batched = record(_inputs(loaded))
    images = [tiny_image(i) for i in range(2)]
    questions = ["What color is the circle?", "How many objects are there in the image?"]
    alone = [
        record(loaded.adapter.build_inputs(loaded.processor, [image], [question]))
        for image, question in zip(images, questions, strict=True)
    ]
    for c in components:
        assert torch.equal(
            batched.tokens[c.name], alone[0].tokens[c.name] + alone[1].tokens[c.name]
        )
        assert torch.equal(
            batched.active[c.name], alone[0].active[c.name] + alone[1].active[c.name]
        )
