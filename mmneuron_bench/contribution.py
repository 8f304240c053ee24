"""Multimodal neurons (Pan et al.): gradient-free contribution scores of language-model neurons.

Each image is captioned or answered with greedy decoding. At every generated position the
score of neuron ``k`` of layer ``l`` of the ``llm`` component for the generated token ``t`` is

    s[l, k] = a[l, k] * (W_down[l][:, k] . W_U[t, :])

where ``a`` is the neuron's activation at the position that predicts ``t``, read where every
other component reads it (the activation module's output: for gated MLPs ``act_fn(gate_proj(x))``,
without the ``up_proj`` factor), ``W_down[l]`` is the MLP's output projection ``[hidden, width]``
and ``W_U`` the LM head's weight ``[vocab, hidden]``. The final norm is ignored, as in the paper.

The score is linear in ``a``, so the mean score of a token over its positions is the mean
activation times the projection: only the activation sums per generated token are kept, and
``W_down^T W_U`` is computed for the needed tokens in chunks, never for the whole vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmneuron_bench.adapter import Component, LoadedModel
from mmneuron_bench.components import ComponentInfo
from mmneuron_bench.domains import Sample, sample_content
from mmneuron_bench.errors import AdapterError, MMNeuronError
from mmneuron_bench.mask_file import NeuronMask
from mmneuron_bench.record import real_positions

METHOD = "contribution"
# Output projections are found by name first, then as the only Linear that reads the neurons.
_DOWN_NAMES = ("down_proj", "fc2", "dense_4h_to_h", "c_proj", "w2", "wo")
_TOKEN_CHUNK = 64  # tokens whose projections are computed together
_NEURON_CHUNK = 256  # neurons whose promoted tokens are computed together
# Plain greedy decoding whatever the checkpoint's generation_config asks for (beams, penalties):
# every new token is the argmax of the model's own next-token distribution.
GREEDY = {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


@dataclass(frozen=True)
class Generation:
    """The greedy continuation of one sample: its question and generated ids (through EOS)."""

    sample: Sample
    question: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class TokenNeurons:
    """The top neurons of one token: ``neurons`` int64 ``[k, 2]`` (layer, neuron), ``scores``."""

    token: int
    count: int  # positions that generated the token
    samples: int  # samples that generated it at least once
    neurons: torch.Tensor
    scores: torch.Tensor


def llm_component(components: Sequence[Component]) -> Component:
    """The model's single component with role ``llm``."""
    found = [c for c in components if c.role == "llm"]
    if len(found) != 1:
        raise AdapterError(f"the model has {len(found)} components with role 'llm', expected 1")
    return found[0]


def down_projections(model: nn.Module, component: Component) -> list[tuple[str, nn.Linear]]:
    """Path and module of each layer's MLP output projection (``W_down``, ``[hidden, width]``).

    It is the sibling of the activation module named like ``down_proj``/``fc2`` whose input is
    the neurons, or else the only ``nn.Linear`` sibling with ``in_features == width``.
    """
    out = []
    for layer in range(component.info.layers):
        path = component.module_path(layer)
        parent_path = path.rpartition(".")[0]
        parent = model.get_submodule(parent_path)
        readers = {
            name: m
            for name, m in parent.named_children()
            if isinstance(m, nn.Linear) and m.in_features == component.info.width
        }
        named = [n for n in _DOWN_NAMES if n in readers]
        if named:
            name = named[0]
        elif len(readers) == 1:
            name = next(iter(readers))
        else:
            raise AdapterError(
                f"cannot find the output projection of '{path}': '{parent_path}' has "
                f"{len(readers)} Linear layers reading {component.info.width} neurons"
            )
        out.append((f"{parent_path}.{name}", readers[name]))
    return out


def unembedding(loaded: LoadedModel) -> torch.Tensor:
    """The LM head's weight ``W_U`` ``[vocab, hidden]``."""
    head = loaded.adapter.language_model(loaded.model).lm_head
    if not isinstance(head, nn.Linear):
        raise AdapterError(f"the LM head is a {type(head).__name__}, not a Linear layer")
    return head.weight


def contribution_scores(
    mean_activation: torch.Tensor,
    tokens: torch.Tensor,
    down: Sequence[torch.Tensor],
    unembed: torch.Tensor,
) -> torch.Tensor:
    """``s[i, l, k] = a[i, l, k] * (W_down[l][:, k] . W_U[tokens[i]])``, float32 ``[T, L, N]``.

    ``mean_activation`` is ``[T, L, N]``, ``down`` the per-layer ``[hidden, width]`` weights.
    Only the rows of ``W_U`` of ``tokens`` are read.
    """
    rows = unembed[tokens.to(unembed.device)].float()  # [T, hidden]
    projection = torch.stack([rows @ w.float() for w in down], dim=1)  # [T, L, N]
    return mean_activation.to(projection.device, torch.float32) * projection


class TokenActivations:
    """Per generated token: the sum of the llm activations at the positions predicting it."""

    def __init__(self, info: ComponentInfo, keep: set[int] | None = None):
        self.info = info
        self.keep = keep
        self.sums: dict[int, torch.Tensor] = {}  # float64 [L, N] on the CPU
        self.counts: dict[int, int] = {}
        self.samples: dict[int, int] = {}

    def add(self, tokens: Sequence[int], activations: torch.Tensor) -> None:
        """Add one sample's positions: ``activations[i]`` ``[L, N]`` predicted ``tokens[i]``."""
        ids = torch.tensor(tokens, dtype=torch.long)
        for token in dict.fromkeys(tokens):
            if self.keep is not None and token not in self.keep:
                continue
            rows = (ids == token).nonzero().flatten().to(activations.device)
            total = activations.index_select(0, rows).double().sum(0).cpu()
            if token in self.sums:
                self.sums[token] += total
            else:
                self.sums[token] = total
            self.counts[token] = self.counts.get(token, 0) + len(rows)
            self.samples[token] = self.samples.get(token, 0) + 1

    def mean(self, token: int) -> torch.Tensor:
        """Mean activation ``[L, N]`` (float64) at the positions that predicted ``token``."""
        return self.sums[token] / self.counts[token]

    def scores(self, token: int, down: Sequence[torch.Tensor], unembed: torch.Tensor):
        """The mean contribution score ``[L, N]`` of every neuron for ``token``."""
        ids = torch.tensor([token])
        return contribution_scores(self.mean(token)[None], ids, down, unembed)[0].cpu()

    def top(
        self, k: int, down: Sequence[torch.Tensor], unembed: torch.Tensor
    ) -> list[TokenNeurons]:
        """The ``k`` highest-scoring neurons of every token (most frequent token first).

        Ties go to the smaller flat index ``l * N + k``.
        """
        order = sorted(self.sums, key=lambda t: (-self.counts[t], t))
        width = self.info.width
        out = []
        for start in range(0, len(order), _TOKEN_CHUNK):
            chunk = order[start : start + _TOKEN_CHUNK]
            means = torch.stack([self.mean(t) for t in chunk])
            scores = contribution_scores(means, torch.tensor(chunk), down, unembed).flatten(1)
            ranked = torch.sort(scores, dim=1, descending=True, stable=True)
            for row, token in enumerate(chunk):
                flat = ranked.indices[row, :k].cpu()
                neurons = torch.stack([flat // width, flat % width], dim=1)
                out.append(
                    TokenNeurons(
                        token,
                        self.counts[token],
                        self.samples[token],
                        neurons,
                        ranked.values[row, :k].cpu(),
                    )
                )
        return out


def promoted_tokens(
    neurons: Iterable[tuple[int, int]],
    down: Sequence[torch.Tensor],
    unembed: torch.Tensor,
    n: int = 5,
) -> dict[tuple[int, int], list[int]]:
    """The ``n`` tokens whose logit each neuron's output weights raise most (``W_U W_down[:, k]``).

    At most ``_NEURON_CHUNK`` columns are projected at once: ``[vocab, chunk]`` at the largest.
    """
    by_layer: dict[int, list[int]] = {}
    for layer, neuron in dict.fromkeys(neurons):
        by_layer.setdefault(layer, []).append(neuron)
    out = {}
    for layer, columns in sorted(by_layer.items()):
        for start in range(0, len(columns), _NEURON_CHUNK):
            part = columns[start : start + _NEURON_CHUNK]
            weights = down[layer][:, torch.tensor(part, device=down[layer].device)]
            logits = unembed @ weights.to(unembed.dtype)  # [vocab, len(part)]
            top = logits.topk(min(n, logits.shape[0]), dim=0).indices.T.cpu()
            for neuron, ids in zip(part, top.tolist(), strict=True):
                out[(layer, neuron)] = ids
    return out


@dataclass
class _LastPositions:
    """Forward hooks storing each call's last-position output of the llm activation modules.

    During ``generate`` the prefill's last position predicts the first new token and every
    decoding step's single position predicts the next one.
    """

    modules: Sequence[nn.Module]
    steps: list[list[torch.Tensor]] = field(default_factory=list)

    @contextmanager
    def hooks(self) -> Iterator[_LastPositions]:
        self.steps = [[] for _ in self.modules]
        handles = [
            module.register_forward_hook(
                lambda _m, _a, out, store=store: store.append(out[:, -1].detach().clone())
            )
            for module, store in zip(self.modules, self.steps, strict=True)
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def take(self) -> torch.Tensor:
        """The stored activations as ``[steps, batch, L, N]``, then forget them."""
        counts = {len(s) for s in self.steps}
        if len(counts) != 1:
            raise MMNeuronError("the llm activation hooks fired a different number of times")
        stacked = torch.stack([torch.stack(s) for s in self.steps], dim=2)
        for s in self.steps:
            s.clear()
        return stacked


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _inputs(loaded: LoadedModel, images: list, questions: list[str]) -> Any:
    inputs = loaded.adapter.build_inputs(loaded.processor, images, questions)
    return inputs.to(_device(loaded.model)).to(loaded.model.dtype)


def _eos_ids(model: nn.Module) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


def _until_eos(row: list[int], eos: set[int]) -> tuple[int, ...]:
    for i, token in enumerate(row):
        if token in eos:
            return tuple(row[: i + 1])
    return tuple(row)


def generate(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    samples: Sequence[Sample],
    prompt: str | None,
    max_new_tokens: int,
    batch_size: int = 1,
    activations: TokenActivations | None = None,
    components: Sequence[Component] | None = None,
) -> Iterator[list[Generation]]:
    """Greedy continuations, one list per batch; optionally adds llm activations per token.

    ``prompt`` replaces every task question (for captioning); ``None`` keeps the question.
    With ``activations``, ``components`` (the model's resolved components) must be given.
    """
    model = loaded.model
    eos = _eos_ids(model)
    capture = None
    if activations is not None:
        capture = _LastPositions(llm_component(components).modules)
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        contents = [sample_content(tasks, s) for s in batch]
        questions = [q if prompt is None else prompt for _, q in contents]
        inputs = _inputs(loaded, [image for image, _ in contents], questions)
        if not bool(inputs["attention_mask"][:, -1].all()):
            raise MMNeuronError("the processor pads on the right; generation needs left padding")
        with torch.inference_mode(), capture.hooks() if capture else nullcontext():
            out = model.generate(**inputs, **GREEDY, max_new_tokens=max_new_tokens)
            steps = capture.take() if capture else None
        new = out[:, inputs["input_ids"].shape[1] :].tolist()
        generations = [
            Generation(s, q, _until_eos(row, eos))
            for s, q, row in zip(batch, questions, new, strict=True)
        ]
        if steps is not None:
            if steps.shape[:2] != (len(new[0]), len(batch)):
                raise MMNeuronError(
                    f"generation ran {steps.shape[0]} forwards of {steps.shape[1]} rows for "
                    f"{len(new[0])} new tokens of {len(batch)} samples"
                )
            for b, generation in enumerate(generations):
                activations.add(generation.tokens, steps[: len(generation.tokens), b])
        yield generations


def forced_probabilities(
    loaded: LoadedModel, tasks: dict[str, Any], generations: Sequence[Generation]
) -> list[torch.Tensor]:
    """Next-token probabilities ``[len, vocab]`` (float32, CPU) at each generated position.

    One forward over prompt + generated tokens (teacher forcing); row ``i`` is the
    distribution from which ``tokens[i]`` was chosen. Padding gets no position.
    """
    model = loaded.model
    contents = [sample_content(tasks, g.sample) for g in generations]
    inputs = _inputs(loaded, [image for image, _ in contents], [g.question for g in generations])
    prompt_len = inputs["input_ids"].shape[1]
    longest = max(len(g.tokens) for g in generations)
    pad = loaded.processor.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    new = torch.full((len(generations), longest), pad, dtype=torch.long)
    new_mask = torch.zeros_like(new)
    for b, g in enumerate(generations):
        new[b, : len(g.tokens)] = torch.tensor(g.tokens)
        new_mask[b, : len(g.tokens)] = 1
    device = inputs["input_ids"].device
    inputs["input_ids"] = torch.cat([inputs["input_ids"], new.to(device)], dim=1)
    attention = torch.cat([inputs["attention_mask"], new_mask.to(device)], dim=1)
    inputs["attention_mask"] = attention
    with torch.inference_mode():
        logits = model(**inputs, position_ids=real_positions(attention)).logits
    rows = logits[:, prompt_len - 1 : prompt_len - 1 + longest].float().softmax(-1).cpu()
    return [rows[b, : len(g.tokens)] for b, g in enumerate(generations)]


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def token_domain(token: int, text: str) -> str:
    """A mask domain name for a token: ``tok<ID>_<letters and digits of its text>``."""
    return f"tok{token}_{re.sub(r'[^0-9A-Za-z]+', '', text)[:24]}"


def token_text(tokenizer: Any, token: int) -> str:
    """The decoded text of one token (what a user types as a word)."""
    return tokenizer.decode([token]).strip() or tokenizer.convert_ids_to_tokens(token)


def contribution_mask(
    components: Sequence[Component],
    model_meta: dict,
    found: Sequence[TokenNeurons],
    tokenizer: Any,
    params: dict,
) -> NeuronMask:
    """A ``method: contribution`` mask: one domain per token, its top llm neurons set.

    ``params["tokens"]`` maps each domain to the token's id, piece and text.
    """
    llm = llm_component(components)
    infos = {c.name: c.info for c in components}
    domains, masks, names = [], {}, {}
    for item in found:
        domain = token_domain(item.token, token_text(tokenizer, item.token))
        domains.append(domain)
        names[domain] = {
            "id": item.token,
            "piece": tokenizer.convert_ids_to_tokens(item.token),
            "text": token_text(tokenizer, item.token),
        }
        for c, info in infos.items():
            masks[(domain, c)] = _none(info)
        masks[(domain, llm.name)][item.neurons[:, 0], item.neurons[:, 1]] = True
    if not domains:
        raise MMNeuronError("no generated token was kept, so there are no neurons to report")
    return NeuronMask(domains, infos, model_meta, METHOD, {**params, "tokens": names}, None, masks)


def resolve_token(mask: NeuronMask, tokenizer: Any, word: str) -> str:
    """The domain of ``word`` in a contribution mask: a domain name, a token id or a word."""
    tokens = mask.params.get("tokens", {})
    if word in tokens:
        return word
    ids = tokenizer.encode(word, add_special_tokens=False)
    candidates = [d for d, t in tokens.items() if len(ids) == 1 and t["id"] == ids[0]]
    candidates = candidates or [d for d, t in tokens.items() if t["text"] == word.strip()]
    if len(candidates) == 1:
        return candidates[0]
    known = ", ".join(t["text"] for t in list(tokens.values())[:10])
    raise MMNeuronError(
        f"token {word!r} is not among the neurons file's tokens (e.g. {known})"
        if not candidates
        else f"{word!r} matches several tokens of the neurons file: {', '.join(candidates)}"
    )


def single_token(tokenizer: Any, word: str) -> int:
    """The id of a word that is exactly one token."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise MMNeuronError(f"{word!r} is {len(ids)} tokens {pieces}, not one token")
    unknown = tokenizer.unk_token_id
    if ids[0] == unknown and word.strip() != tokenizer.unk_token:
        raise MMNeuronError(f"{word!r} is not in the vocabulary (it becomes {tokenizer.unk_token})")
    return ids[0]


def check_contribution_mask(mask: NeuronMask, model_meta: dict, where: str) -> None:
    """Refuse a mask that is not a contribution mask of this very model."""
    if mask.method != METHOD or "tokens" not in mask.params:
        raise MMNeuronError(f"{where} is a {mask.method!r} mask, not a {METHOD!r} neurons file")
    if mask.model.get("fingerprint") != model_meta["fingerprint"]:
        raise MMNeuronError(
            f"{where} was found on another model ({mask.model.get('name_or_path')!r}, "
            "fingerprint differs)"
        )


@dataclass(frozen=True)
class Ablation:
    """How far p(token) falls, at the positions that generated it, with neurons switched off.

    Probabilities are teacher-forced on the unablated greedy generations and averaged over
    those positions; ``p_random`` is the mean over the random draws.
    """

    domain: str
    token: int
    neurons: int
    positions: int
    samples: int
    p_base: float
    p_top: float
    p_random: float
    p_random_draws: tuple[float, ...]


def random_like(selected: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """As many neurons as ``selected`` (bool ``[L, N]``), drawn uniformly from the others."""
    others = (~selected).flatten().nonzero().flatten()
    pick = others[torch.randperm(len(others), generator=generator)[: int(selected.sum())]]
    out = torch.zeros(selected.numel(), dtype=torch.bool)
    out[pick] = True
    return out.view_as(selected)


def ablate(
    loaded: LoadedModel,
    components: Sequence[Component],
    tasks: dict[str, Any],
    generations: Sequence[Generation],
    mask: NeuronMask,
    domains: Sequence[str],
    draws: int = 3,
    seed: int = 0,
    batch_size: int = 1,
) -> list[Ablation]:
    """For each token domain: p(token) with its top neurons off versus as many random ones.

    The random neurons are drawn among the llm neurons outside the token's top set, with a
    generator seeded by ``seed`` and the token id (so a token's draws do not depend on which
    other tokens are ablated). Deactivation is :class:`~mmneuron_bench.masking.Deactivation`
    (zero) on every position of the prompt and the generation.
    """
    from mmneuron_bench.masking import Deactivation

    llm = llm_component(components)
    results = []
    for domain in domains:
        token = mask.params["tokens"][domain]["id"]
        chosen = [g for g in generations if token in g.tokens]
        if not chosen:
            continue
        top = mask.masks[(domain, llm.name)]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + token)
        conditions = {"top": top} | {
            f"random{i}": random_like(top, generator) for i in range(draws)
        }
        control = NeuronMask(
            ["none", *conditions],
            mask.components,
            mask.model,
            "ablation",
            {},
            None,
            {
                (d, c): conditions[d] if d in conditions and c == llm.name else _none(info)
                for d in ["none", *conditions]
                for c, info in mask.components.items()
            },
        )
        means = {}
        for condition in control.domains:
            with Deactivation(components, control, domains=condition):
                means[condition] = _mean_probability(loaded, tasks, chosen, token, batch_size)
        random_means = tuple(means[f"random{i}"] for i in range(draws))
        results.append(
            Ablation(
                domain,
                token,
                int(top.sum()),
                sum(g.tokens.count(token) for g in chosen),
                len(chosen),
                means["none"],
                means["top"],
                sum(random_means) / draws if draws else float("nan"),
                random_means,
            )
        )
    return results


def _none(info: ComponentInfo) -> torch.Tensor:
    return torch.zeros(info.layers, info.width, dtype=torch.bool)


def _mean_probability(
    loaded: LoadedModel,
    tasks: dict[str, Any],
    generations: Sequence[Generation],
    token: int,
    batch_size: int,
) -> float:
    """Mean p(token) over the positions where the generations chose ``token``."""
    values = []
    for batch in batched(generations, batch_size):
        for g, probs in zip(batch, forced_probabilities(loaded, tasks, batch), strict=True):
            at = torch.tensor(g.tokens) == token
            values.append(probs[at, token].double())
    return float(torch.cat(values).mean())
