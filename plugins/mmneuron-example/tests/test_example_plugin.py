"""The BLIP-2 adapter on a tiny offline checkpoint: components, hooks and token roles."""

from __future__ import annotations

import pytest
from mmneuron_bench.models.adapter import IMAGE, PAD, TEXT
from mmneuron_bench.models.hookcheck import check_hooks_fire
from mmneuron_bench.testing import tiny_image
from transformers import AutoConfig

from mmneuron_example.adapter import Blip2Adapter
from mmneuron_example.testing import COMPONENTS, NUM_QUERY_TOKENS, build_tiny_blip2


@pytest.fixture(scope="session")
def tiny_blip2(tmp_path_factory):
    """Directory of the tiny BLIP-2 checkpoint, built once per session."""
    return build_tiny_blip2(tmp_path_factory.mktemp("tiny_blip2"))


@pytest.fixture(scope="session")
def loaded(tiny_blip2):
    return Blip2Adapter().load(str(tiny_blip2))


def _described(components):
    return {c.name: (c.role, c.info.layers, c.info.width) for c in components}


def test_adapter_handles_the_config(tiny_blip2):
    adapter = Blip2Adapter()
    adapter.validate()
    assert adapter.handles(AutoConfig.from_pretrained(tiny_blip2))


def test_checkpoint_is_small(tiny_blip2):
    assert sum(f.stat().st_size for f in tiny_blip2.rglob("*") if f.is_file()) < 1_000_000


def test_components_resolve_with_layers_and_width(tiny_blip2, loaded):
    adapter = Blip2Adapter()
    assert _described(adapter.resolve(loaded.model)) == COMPONENTS
    skeleton = adapter.skeleton(AutoConfig.from_pretrained(tiny_blip2))
    assert _described(adapter.resolve(skeleton)) == COMPONENTS


def test_language_model_parts(loaded):
    parts = Blip2Adapter().language_model(loaded.model)
    assert len(parts.layers) == COMPONENTS["llm"][1]
    assert parts.lm_head.out_features == loaded.model.config.text_config.vocab_size


def test_hooks_fire_on_every_layer(loaded):
    components = loaded.adapter.resolve(loaded.model)
    assert all(c.unused_layers == () for c in components)
    check_hooks_fire(loaded, components)


def test_token_roles_mark_the_query_tokens_as_image(loaded):
    images, questions = [tiny_image(0), tiny_image(1)], ["What color is the circle?", "How many?"]
    inputs = loaded.adapter.build_inputs(loaded.processor, images, questions)
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    assert (roles == IMAGE).sum(dim=1).tolist() == [NUM_QUERY_TOKENS] * 2
    # The processor puts the query tokens first, in front of the padding and the BOS token.
    assert (roles[:, :NUM_QUERY_TOKENS] == IMAGE).all()
    assert (roles[1] == PAD).any() and not (roles[0] == PAD).any()
    assert ((roles == TEXT) == (inputs["attention_mask"].bool() & (roles != IMAGE))).all()
