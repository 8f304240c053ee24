"""Contribution scores on tiny real checkpoints: the formula, aggregation, memory, ablation."""

from __future__ import annotations

import pytest
import torch
from planted_model import PLANTED_LAYER, PLANTED_NEURON, PLANTED_WORD
from torch.utils._python_dispatch import TorchDispatchMode

from mmneuron_bench.domains.tasks import domain_samples, load_tasks, sample_content
from mmneuron_bench.models.loading import load_model, model_identity
from mmneuron_bench.neurons.ablation import ablate
from mmneuron_bench.neurons.anatomy import down_weights, llm_component, unembedding
from mmneuron_bench.neurons.generation import forced_probabilities, generate
from mmneuron_bench.neurons.neurons_file import contribution_mask
from mmneuron_bench.neurons.scores import TokenActivations, promoted_tokens
from mmneuron_bench.testing import write_tiny_task


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    write_tiny_task(root, "tiny_a", n_docs=3, seed=21)
    return load_tasks(["tiny_a"], [str(root)])


def _run(loaded, tasks, limit, max_new_tokens, batch_size=1, keep=None):
    components = loaded.adapter.resolve(loaded.model)
    activations = TokenActivations(llm_component(components).info, keep)
    samples = domain_samples(tasks, ["tiny_a"], limit)
    generations = [
        g
        for batch in generate(
            loaded, tasks, samples, None, max_new_tokens, batch_size, activations, components
        )
        for g in batch
    ]
    return components, activations, generations


def _weights(loaded, components):
    down = down_weights(llm_component(components))
    return down, unembedding(loaded).detach()


def _llm_outputs(components, run):
    """Run ``run()`` with hooks keeping every llm activation output; returns [L] tensors."""
    seen = []
    handles = [
        m.register_forward_hook(lambda _m, _a, out: seen.append(out.detach().clone()))
        for m in llm_component(components).modules
    ]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return seen, result


def _argmax_continuation(loaded, inputs, steps: int) -> list[int]:
    """Independent greedy decoding of one prompt: full forwards, argmax of the last logits."""
    ids, extra = inputs["input_ids"], {k: v for k, v in inputs.items() if k != "input_ids"}
    tokens = []
    with torch.no_grad():
        for _ in range(steps):
            extra["attention_mask"] = torch.ones_like(ids)
            token = int(loaded.model(input_ids=ids, **extra).logits[0, -1].argmax())
            tokens.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokens


def test_generation_is_plain_greedy_whatever_the_checkpoint_asks(tiny_llava_next, tasks):
    loaded = load_model(str(tiny_llava_next))
    _, plain, expected = _run(loaded, tasks, limit=3, max_new_tokens=4, batch_size=2)
    config = loaded.model.generation_config
    config.num_beams, config.repetition_penalty, config.no_repeat_ngram_size = 3, 1.5, 2
    _, beamed, generations = _run(loaded, tasks, limit=3, max_new_tokens=4, batch_size=2)
    assert [g.tokens for g in generations] == [g.tokens for g in expected]
    assert beamed.counts == plain.counts
    for token, total in plain.sums.items():
        assert torch.allclose(beamed.sums[token], total, rtol=1e-5, atol=1e-6)
    for generation in generations:
        image, question = sample_content(tasks, generation.sample)
        inputs = loaded.adapter.build_inputs(loaded.processor, [image], [question])
        argmax = _argmax_continuation(loaded, inputs, len(generation.tokens))
        assert list(generation.tokens) == argmax


@pytest.mark.parametrize("family", ["llava_next", "instructblip"])
def test_score_at_one_position_equals_a_direct_computation(family, tiny_checkpoint_dir, tasks):
    loaded = load_model(str(tiny_checkpoint_dir[family]))
    components, activations, [generation] = _run(loaded, tasks, limit=1, max_new_tokens=1)
    [token] = generation.tokens
    # Independent: a plain forward of the prompt; the last position predicts the token.
    image, question = sample_content(tasks, generation.sample)
    inputs = loaded.adapter.build_inputs(loaded.processor, [image], [question])
    outputs, logits = _llm_outputs(components, lambda: loaded.model(**inputs).logits.detach())
    assert int(logits[0, -1].argmax()) == token
    llm = llm_component(components)
    parts = loaded.adapter.language_model(loaded.model)
    direct = torch.zeros(llm.info.layers, llm.info.width)
    with torch.no_grad():
        for layer, out in enumerate(outputs):
            down = loaded.model.get_submodule(llm.module_path(layer).rpartition(".")[0]).down_proj
            # The modules themselves map a unit neuron output to vocabulary logits.
            per_neuron = parts.lm_head(down(torch.eye(llm.info.width)))[:, token]
            direct[layer] = out[0, -1] * per_neuron
    down, unembed = _weights(loaded, components)
    assert torch.allclose(activations.scores(token, down, unembed), direct, atol=1e-6, rtol=1e-4)
    [top] = activations.top(5, down, unembed)
    want = direct.flatten().topk(5)
    assert top.token == token and top.count == 1 and top.samples == 1
    assert top.neurons[:, 0].tolist() == (want.indices // llm.info.width).tolist()
    assert top.neurons[:, 1].tolist() == (want.indices % llm.info.width).tolist()
    assert torch.allclose(top.scores, want.values, atol=1e-6, rtol=1e-4)


def test_scores_average_every_position_and_batch_size_changes_nothing(tiny_llava_next, tasks):
    loaded = load_model(str(tiny_llava_next))
    components, activations, generations = _run(loaded, tasks, 3, 4, batch_size=2)
    _, single, generations_1 = _run(loaded, tasks, 3, 4, batch_size=1)
    assert generations == generations_1
    # Independent: teacher-forced forwards, one per sample, keeping every position.
    sums, counts = {}, {}
    for g in generations:
        outputs, probs = _llm_outputs(
            components, lambda g=g: forced_probabilities(loaded, tasks, [g])
        )
        assert probs[0].argmax(-1).tolist() == list(g.tokens), "rows align with the tokens"
        n = len(g.tokens)
        acts = torch.stack([o[0, -n - 1 : -1] for o in outputs], dim=1).double()  # [n, L, N]
        for i, token in enumerate(g.tokens):
            sums[token] = sums.get(token, 0) + acts[i]
            counts[token] = counts.get(token, 0) + 1
    assert set(activations.sums) == set(sums)
    for token in sums:
        assert activations.counts[token] == counts[token] == single.counts[token]
        assert torch.allclose(activations.mean(token), sums[token] / counts[token], atol=1e-5)
        assert torch.allclose(single.mean(token), activations.mean(token), atol=1e-5)


def test_keep_restricts_the_tokens(tiny_llava_next, tasks):
    loaded = load_model(str(tiny_llava_next))
    _, everything, generations = _run(loaded, tasks, 3, 4)
    chosen = generations[0].tokens[0]
    _, only, _ = _run(loaded, tasks, 3, 4, keep={chosen, 10_000})
    assert set(only.sums) == {chosen}
    assert torch.equal(only.sums[chosen], everything.sums[chosen])


class _LargestOutput(TorchDispatchMode):
    """Records the element count of the largest tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_grows_with_vocabulary_times_width(tiny_llava_next, tasks):
    loaded = load_model(str(tiny_llava_next))
    components, activations, _ = _run(loaded, tasks, 3, 4)
    down, unembed = _weights(loaded, components)
    info = llm_component(components).info
    vocab = 20_000  # layers x width x vocab = 3.2 M elements; width x vocab = 1.6 M
    extra = torch.randn(vocab - unembed.shape[0], unembed.shape[1], generator=torch.Generator())
    big = torch.cat([unembed, extra * unembed.std()])
    with _LargestOutput() as seen:
        found = activations.top(2, down, big)
        promoted_tokens([tuple(n) for f in found for n in f.neurons.tolist()], down, big)
    assert vocab <= seen.largest < vocab * info.width  # [vocab, few neurons] at most
    # The extra vocabulary changes no score of a generated token.
    small = activations.top(2, down, unembed)
    for a, b in zip(found, small, strict=True):
        assert a.token == b.token and torch.equal(a.neurons, b.neurons)
        assert torch.allclose(a.scores, b.scores)


def test_promoted_tokens_are_the_largest_logits_of_the_output_weights(tiny_llava_next):
    loaded = load_model(str(tiny_llava_next))
    components = loaded.adapter.resolve(loaded.model)
    down, unembed = _weights(loaded, components)
    promoted = promoted_tokens([(1, 5), (0, 7)], down, unembed, n=3)
    for layer, neuron in [(1, 5), (0, 7)]:
        logits = unembed @ down[layer][:, neuron]
        assert promoted[(layer, neuron)] == logits.topk(3).indices.tolist()


def test_ablating_the_planted_neuron_drops_p_far_more_than_random_neurons(planted, tasks):
    loaded = load_model(str(planted))
    components, activations, generations = _run(loaded, tasks, 3, 3)
    red = loaded.processor.tokenizer.convert_tokens_to_ids(PLANTED_WORD)
    assert all(set(g.tokens) == {red} for g in generations)
    down, unembed = _weights(loaded, components)
    found = activations.top(3, down, unembed)
    [item] = [f for f in found if f.token == red]
    assert item.neurons[0].tolist() == [PLANTED_LAYER, PLANTED_NEURON]
    model_meta = model_identity(loaded, str(planted))
    mask = contribution_mask(
        components, model_meta, found, loaded.processor.tokenizer, {"top_k": 3}
    )
    [domain] = [d for d, t in mask.params["tokens"].items() if t["id"] == red]
    assert domain == "tok33_red" and mask.method == "contribution"
    assert all(not m.any() for (d, c), m in mask.masks.items() if c != "llm"), (
        "only llm neurons are set"
    )
    [result] = ablate(loaded, components, tasks, generations, mask, [domain], draws=2, seed=3)
    assert result.neurons == 3 and result.positions == 9 and result.samples == 3
    assert result.p_base > 0.9
    assert result.p_base - result.p_top > 0.8
    assert abs(result.p_base - result.p_random) < 0.05
    assert len(result.p_random_draws) == 2
