"""Deactivation hooks on tiny real checkpoints: exact zeros and means, selection, clean removal."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch

from mmneuron_bench.errors import MaskMismatchError, MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.models.adapter import Component, LoadedModel
from mmneuron_bench.models.components import ComponentInfo
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.testing import tiny_image

FAMILIES = ["llava_next", "llava", "instructblip"]
DOMAINS = ["a", "b", "c"]
QUESTIONS = ["what color is the circle ?", "is there a red square on the left of the image ?"]


@dataclass
class Case:
    loaded: LoadedModel
    components: list[Component]
    inputs: dict
    logits: torch.Tensor  # of the unmasked model

    @property
    def infos(self) -> dict[str, ComponentInfo]:
        return {c.name: c.info for c in self.components}


@pytest.fixture(scope="module", params=FAMILIES)
def case(request, tiny_checkpoint_dir) -> Case:
    loaded = load_model(str(tiny_checkpoint_dir[request.param]))
    inputs = loaded.adapter.build_inputs(
        loaded.processor, [tiny_image(0), tiny_image(1)], QUESTIONS
    )
    return Case(loaded, loaded.adapter.resolve(loaded.model), inputs, forward(loaded, inputs))


def forward(loaded: LoadedModel, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(**inputs).logits


def make_mask(infos: dict[str, ComponentInfo], fill, domains=DOMAINS) -> NeuronMask:
    """A mask whose (domain, component) tensor is `fill(domain, info)`."""
    masks = {(d, c): fill(d, info) for d in domains for c, info in infos.items()}
    return NeuronMask(list(domains), dict(infos), {}, "test", {}, None, masks)


def random_mask(infos: dict[str, ComponentInfo], rate: float = 0.1, seed: int = 0) -> NeuronMask:
    g = torch.Generator().manual_seed(seed)
    return make_mask(infos, lambda d, i: torch.rand(i.layers, i.width, generator=g) < rate)


def hook_count(case: Case) -> int:
    """Hooks on the activation modules (transformers hooks other modules itself, lazily)."""
    return sum(len(m._forward_hooks) for c in case.components for m in c.modules)


def all_hooks(model: torch.nn.Module) -> dict[str, list]:
    return {name: list(m._forward_hooks.values()) for name, m in model.named_modules()}


@contextmanager
def recording(components: list[Component]):
    """Store every activation output, per component and layer, for the duration of the block."""
    seen = {c.name: [[] for _ in c.modules] for c in components}
    handles = [
        module.register_forward_hook(
            lambda _m, _a, out, store=seen[c.name][layer]: store.append(out.detach().clone())
        )
        for c in components
        for layer, module in enumerate(c.modules)
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def assert_zero_where_masked(seen: dict, chosen: dict[str, torch.Tensor]) -> None:
    for name, layers in seen.items():
        for layer, outputs in enumerate(layers):
            assert outputs, f"{name} layer {layer} never ran"
            for out in outputs:
                part = out[..., chosen[name][layer]]
                assert (part == 0).all() and not part.signbit().any(), (name, layer)


def test_empty_selection_installs_nothing_and_is_bit_identical(case):
    empty = make_mask(case.infos, lambda d, i: torch.zeros(i.layers, i.width, dtype=torch.bool))
    full = random_mask(case.infos)
    before = all_hooks(case.loaded.model)
    for deactivation in (
        Deactivation(case.components, empty),
        Deactivation(case.components, full, roles="none"),
        Deactivation(case.components, full, domains=[]),
        Deactivation(case.components, full, roles=[]),
    ):
        with deactivation:
            assert all_hooks(case.loaded.model) == before
            assert torch.equal(forward(case.loaded, case.inputs), case.logits)
        assert set(deactivation.counts.values()) == {0}


def test_zero_mode_zeroes_masked_neurons_everywhere_and_removes_cleanly(case):
    mask = random_mask(case.infos)
    params = {k: v.clone() for k, v in case.loaded.model.state_dict().items()}
    before = all_hooks(case.loaded.model)
    deactivation = Deactivation(case.components, mask)
    chosen = mask.select("all", "all")
    assert deactivation.counts == {c: int(m.sum()) for c, m in chosen.items()}
    with deactivation, recording(case.components) as seen:
        logits = forward(case.loaded, case.inputs)
    assert_zero_where_masked(seen, chosen)
    assert not torch.equal(logits, case.logits)
    assert all_hooks(case.loaded.model) == before
    for c in case.components:
        assert all(not m._forward_hooks for m in c.modules)
    state = case.loaded.model.state_dict()
    assert state.keys() == params.keys() and all(torch.equal(state[k], params[k]) for k in params)
    assert torch.equal(forward(case.loaded, case.inputs), case.logits)


def test_unmasked_neurons_of_the_last_llm_layer_keep_their_values(case):
    last = case.infos["llm"].layers - 1
    g = torch.Generator().manual_seed(1)

    def fill(d, info):
        m = torch.zeros(info.layers, info.width, dtype=torch.bool)
        if info.name == "llm":
            m[last] = torch.rand(info.width, generator=g) < 0.3
        return m

    mask = make_mask(case.infos, fill)
    chosen = mask.masks[("a", "llm")] | mask.masks[("b", "llm")] | mask.masks[("c", "llm")]
    with recording(case.components) as before:
        forward(case.loaded, case.inputs)
    with Deactivation(case.components, mask), recording(case.components) as after:
        forward(case.loaded, case.inputs)
    (plain,), (masked,) = before["llm"][last], after["llm"][last]
    keep = ~chosen[last]
    assert torch.equal(masked[..., keep], plain[..., keep])
    assert (masked[..., chosen[last]] == 0).all() and (plain[..., chosen[last]] != 0).any()


def test_generation_is_masked_on_every_step(case):
    mask = random_mask(case.infos, seed=2)
    with Deactivation(case.components, mask), recording(case.components) as seen:
        with torch.no_grad():
            case.loaded.model.generate(**case.inputs, max_new_tokens=3, min_new_tokens=3)
    assert_zero_where_masked(seen, mask.select("all", "all"))
    for outputs in seen["llm"]:
        assert [out.shape[1] for out in outputs[1:]] == [1, 1], "prefill then two decode steps"
    assert hook_count(case) == 0


@pytest.mark.parametrize(
    ("roles", "hooked_roles"),
    [
        ("vision", {"vision"}),
        ("connector", {"connector"}),
        (["vision", "llm"], {"vision", "llm"}),
        ("all", {"vision", "connector", "llm"}),
        ("none", set()),
    ],
)
def test_roles_choose_which_layers_get_hooks(case, roles, hooked_roles):
    def fill(d, info):  # one neuron per domain and layer, none in the first layer
        m = torch.zeros(info.layers, info.width, dtype=torch.bool)
        m[1:, DOMAINS.index(d)] = True
        return m

    mask = make_mask(case.infos, fill)
    with Deactivation(case.components, mask, roles=roles) as deactivation:
        for c in case.components:
            hooked = [len(m._forward_hooks) for m in c.modules]
            expected = 1 if c.role in hooked_roles else 0
            assert hooked == [0] + [expected] * (c.info.layers - 1), c.name
            assert deactivation.layer_counts[c.name] == [len(DOMAINS) * n for n in hooked]
    assert hook_count(case) == 0


def test_domains_are_unioned(case):
    mask = random_mask(case.infos, seed=3)
    union = {c: mask.masks[("a", c)] | mask.masks[("c", c)] for c in case.infos}
    union_mask = make_mask(case.infos, lambda d, i: union[i.name], domains=["u"])
    with Deactivation(case.components, mask, domains=["a", "c"]) as deactivation:
        with recording(case.components) as seen:
            logits = forward(case.loaded, case.inputs)
    assert deactivation.counts == {c: int(m.sum()) for c, m in union.items()}
    assert_zero_where_masked(seen, union)
    with Deactivation(case.components, union_mask):
        assert torch.equal(forward(case.loaded, case.inputs), logits)
    with Deactivation(case.components, mask, domains="b") as single:
        assert single.counts == {c: int(mask.masks[("b", c)].sum()) for c in case.infos}


def random_stats(infos: dict[str, ComponentInfo], domains: list[str]) -> ActivationStats:
    stats = ActivationStats.empty(domains, infos, {}, "all")
    g = torch.Generator().manual_seed(4)
    for c in infos:
        stats.tokens[c] = torch.randint(1, 1000, stats.tokens[c].shape, generator=g)
        stats.sum[c] = torch.randn(stats.sum[c].shape, generator=g, dtype=torch.float64) * 100
    return stats


def expected_mean(stats: ActivationStats, component: str, layer: int, domains: list[str]):
    total = sum(stats.sum[component][stats.domains.index(d), layer] for d in domains)
    tokens = sum(int(stats.tokens[component][stats.domains.index(d), layer]) for d in domains)
    return total / tokens


def assert_means(seen: dict, chosen: dict, stats: ActivationStats, domains: list[str], dtype):
    for name, layers in seen.items():
        for layer, outputs in enumerate(layers):
            index = chosen[name][layer]
            want = expected_mean(stats, name, layer, domains)[index].to(dtype)
            for out in outputs:
                assert out.dtype == dtype
                assert torch.equal(out[..., index], want.expand_as(out[..., index])), name


def test_mean_mode_sets_the_pooled_mean(case):
    mask = random_mask(case.infos, seed=5)
    stats = random_stats(case.infos, ["c", "b", "a"])  # another order than the mask's
    with Deactivation(case.components, mask, domains=["a", "b"], mode="mean", stats=stats):
        with recording(case.components) as seen:
            logits = forward(case.loaded, case.inputs)
    assert_means(seen, mask.select(["a", "b"]), stats, ["a", "b"], torch.float32)
    assert not torch.equal(logits, case.logits)
    assert hook_count(case) == 0


def test_mean_mode_casts_to_the_activation_dtype(tiny_llava_next):
    loaded = load_model(str(tiny_llava_next))
    loaded.model.to(torch.bfloat16)
    components = loaded.adapter.resolve(loaded.model)
    infos = {c.name: c.info for c in components}
    inputs = loaded.adapter.build_inputs(loaded.processor, [tiny_image(0)], QUESTIONS[:1])
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    mask, stats = random_mask(infos, seed=6), random_stats(infos, DOMAINS)
    with Deactivation(components, mask, domains="c", mode="mean", stats=stats):
        with recording(components) as seen:
            forward(loaded, inputs)
    assert_means(seen, mask.select("c"), stats, ["c"], torch.bfloat16)


def test_exception_inside_the_block_removes_the_hooks(case):
    deactivation = Deactivation(case.components, random_mask(case.infos))
    with pytest.raises(KeyError, match="boom"), deactivation:
        assert hook_count(case) > 0
        raise KeyError("boom")
    assert hook_count(case) == 0
    assert torch.equal(forward(case.loaded, case.inputs), case.logits)


def test_a_deactivation_is_reusable_but_not_reentrant(case):
    deactivation = Deactivation(case.components, random_mask(case.infos))
    with deactivation:
        first = forward(case.loaded, case.inputs)
        with pytest.raises(RuntimeError, match="already active"), deactivation:
            pass
    assert hook_count(case) == 0
    with deactivation:
        assert torch.equal(forward(case.loaded, case.inputs), first)
    assert hook_count(case) == 0


def _altered(infos: dict[str, ComponentInfo], how: str) -> dict[str, ComponentInfo]:
    llm = infos["llm"]
    if how == "width":
        return {**infos, "llm": ComponentInfo("llm", "llm", llm.layers, llm.width + 1)}
    if how == "layers":
        return {**infos, "llm": ComponentInfo("llm", "llm", llm.layers + 1, llm.width)}
    if how == "missing":
        return {c: i for c, i in infos.items() if c != "vision"}
    return {**infos, "extra": ComponentInfo("extra", "llm", 1, 4)}


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("width", "'llm'.*x 81 neurons in the mask.*x 80"),
        ("layers", "'llm'.*3 layers.*in the mask.*2 layers"),
        ("missing", "'vision'"),
        ("extra", "'extra'"),
    ],
)
def test_a_mismatched_mask_is_refused_before_any_hook(case, how, match):
    mask = make_mask(
        _altered(case.infos, how), lambda d, i: torch.ones(i.layers, i.width, dtype=torch.bool)
    )
    before = all_hooks(case.loaded.model)
    with pytest.raises(MaskMismatchError, match=match):
        Deactivation(case.components, mask)
    assert all_hooks(case.loaded.model) == before


@pytest.mark.parametrize(
    ("how", "error", "match"),
    [
        ("width", MaskMismatchError, "stats do not match.*'llm'"),
        ("missing", MaskMismatchError, "stats do not match.*'vision'"),
        ("domain", MaskMismatchError, "no domain 'b'"),
        ("no tokens", MMNeuronError, "no tokens in layer 1 of 'llm'"),
    ],
)
def test_unusable_stats_are_refused_before_any_hook(case, how, error, match):
    mask = random_mask(case.infos, rate=0.5)
    if how == "domain":
        stats = random_stats(case.infos, ["a", "c"])
    elif how == "no tokens":
        stats = random_stats(case.infos, DOMAINS)
        stats.tokens["llm"][:2, 1] = 0  # the other domain's tokens must not count
    else:
        stats = random_stats(_altered(case.infos, how), DOMAINS)
    with pytest.raises(error, match=match):
        Deactivation(case.components, mask, domains=["a", "b"], mode="mean", stats=stats)
    assert hook_count(case) == 0


@pytest.mark.parametrize("case", ["llava"], indirect=True)
def test_bad_options_are_refused(case):
    mask = random_mask(case.infos)
    stats = random_stats(case.infos, DOMAINS)
    with pytest.raises(ValueError, match="mode must be"):
        Deactivation(case.components, mask, mode="noise")
    with pytest.raises(ValueError, match="required for mode 'mean'"):
        Deactivation(case.components, mask, mode="mean")
    with pytest.raises(ValueError, match="only used there"):
        Deactivation(case.components, mask, stats=stats)
    with pytest.raises(ValueError, match="decoder"):
        Deactivation(case.components, mask, roles=["decoder"])
    with pytest.raises(MaskMismatchError, match="'news'"):
        Deactivation(case.components, mask, domains=["a", "news"])
    assert hook_count(case) == 0


def test_a_role_the_model_has_no_neurons_of_is_refused(case):
    """As the CLI refuses such a module set: switching off a role without components would
    silently switch nothing off."""
    kept = [c for c in case.components if c.role != "connector"]
    mask = random_mask({c.name: c.info for c in kept})
    with pytest.raises(MaskMismatchError, match="role 'connector': the model has no neurons"):
        Deactivation(kept, mask, roles=["vision", "connector"])
    for every in ("all", ["vision", "connector", "llm"]):  # every role it has
        with Deactivation(kept, mask, roles=every) as deactivation:
            assert sum(deactivation.counts.values()) > 0
    assert hook_count(case) == 0


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_in_place_write_never_touches_the_input_or_autograd(mode):
    """Without autograd the hook writes into the activation in place; it copies instead when
    the activation is the module's input (identity activation), a view, or needs gradients."""
    from mmneuron_bench.interventions.mask import _LayerHook

    values = None if mode == "zero" else torch.tensor([5.0, 7.0], dtype=torch.float64)
    hook = _LayerHook(torch.tensor([1, 3]), values)
    x = torch.arange(12.0).reshape(2, 6)
    fill = torch.zeros(2) if values is None else values.float()
    expected = x.clone()
    expected[:, [1, 3]] = fill

    with torch.no_grad():
        fresh = x * 1
        assert hook(None, (x,), fresh) is fresh and torch.equal(fresh, expected)
        identity = hook(None, (x,), x)
        assert torch.equal(identity, expected) and torch.equal(x, torch.arange(12.0).view(2, 6))
        base = torch.arange(12.0).reshape(2, 6)
        view = hook(None, (), base[:, :])
        assert torch.equal(view, expected) and torch.equal(base, torch.arange(12.0).view(2, 6))

    leaf = torch.arange(12.0).reshape(2, 6).requires_grad_()
    out = hook(None, (leaf,), leaf * 1)
    assert torch.equal(out.detach(), expected)
    out.sum().backward()
    keep = torch.ones(2, 6)
    keep[:, [1, 3]] = 0
    assert torch.equal(leaf.grad, keep)
