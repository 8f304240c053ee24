"""FastMem: memorise each document's text in the last MLP before answering it.

Zhu et al., "FastMem: Fast Memorization of Prompt Improves Context Awareness of Large
Language Models" (Findings of EMNLP 2024; official code IAAR-Shanghai/FastMem, text-only,
transformers 4.40). Written here from the procedure, for any adapter's language model:

- **Trained:** the weights of the last decoder layer's MLP only (for a gated MLP the gate,
  up and down projections, found through the adapter's ``llm`` component: ``width``, ``up``
  and ``output``); everything else is frozen. Before every document a fresh AdamW (betas
  0.9/0.999, eps 1e-8, weight decay 0, constant learning rate) and gradient clipping at an
  L2 norm of 1.0. Defaults are the paper's for question answering: lr 1e-5, 10 steps, KL
  coefficient 0.1, no early stopping.
- **Loss:** the mean next-token NLL of the memorised text, wrapped as an assistant turn of
  the chat template after a user turn holding the document's images (the end-of-turn token
  is labelled too; image and template positions never are), plus ``kl`` times the per-token
  mean of KL(p_ref || p_theta) over the same positions, p_ref being the unmodified model's
  distribution at step 0 (so the KL term is 0 at step 0).
- **What is memorised** (``target``): ``context``: the document's context passage, from the
  field the task's YAML names in ``metadata: {fastmem_context: FIELD}``, else the first
  non-empty field of :data:`CONTEXT_FIELDS`; a document without one memorises its question
  instead. ``question``: the document's ``question`` field (or ``metadata:
  {fastmem_question: FIELD}``), else the prompt as the task formats it.
- **Cost:** the input of the last decoder layer is captured once per document (one forward
  that stops there); every step re-runs only that layer, the final norm and the LM head on
  the labelled positions (exact: nothing below the layer changes).
- **Precision:** the trained weights are fp32 master copies. In a bf16/fp16 model the MLP
  then runs in fp32 (its input cast up, its output cast back) from the first step until the
  document is answered, since a 1e-5 step vanishes in bf16 rounding.
- **Restoring:** the model's own ``Parameter`` objects are never written: the copies are
  swapped in for the document and the originals put back after it, bit-identical by
  construction (also after an error).
- **Contrastive decoding** (``cd=ALPHA``, the paper's "+CD" with alpha 0.5): every logit
  the model computes while the document is answered is ``(1 + a) z_mem - a z_orig``, the
  memorised and the original weights on the same input (memorised vs original, not with vs
  without the context). Since only the last MLP differs, both share every layer below it,
  its attention and the KV cache: a hook on that MLP also runs it with the original
  weights, and a hook on the final norm mixes the two normalised states, which gives
  exactly the mixed logits because the LM head is affine. The cost per forward is one more
  last-layer MLP and final norm (not a second model pass, as in the official code). This
  needs the MLP's output to be added to the residual stream (Llama-style layers); that is
  checked on every document and refused otherwise (e.g. Gemma's post-MLP norm).

Composes with a neuron mask (entered before it, ``order`` 30 > 20): the mask's hooks are
active while the text is memorised, so masked neurons of the last layer get zero gradient
(in ``zero`` mode) and stay off. Loglikelihood requests of a document (one per answer option)
are scored after one memorisation; with ``cd`` they are scored with the mixed logits too.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.interventions.base import ORDER_PER_DOCUMENT, Intervention, Target
from mmneuron_bench.models.adapter import get_module

TARGETS = ("context", "question")
# Document fields that hold a task's context passage (ScienceQA's hint and lecture, OCR text).
CONTEXT_FIELDS = ("context", "hint", "lecture", "passage", "paragraph", "ocr_text", "ocr_tokens")
CLIP_NORM = 1.0
ADAM = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}


class _Stop(Exception):
    """Raised by the capture hook: the forward need not go past the last layer's input."""


@dataclass
class LastMLP:
    """The pieces FastMem touches: the last decoder layer, its MLP and the MLP's trained
    linears (by path), the final norm and the LM head."""

    layer: nn.Module
    layer_path: str
    mlp: nn.Module
    linears: dict[str, nn.Linear]
    final_norm: nn.Module
    lm_head: nn.Module
    softcap: float | None


@dataclass
class Memorisation:
    """One document's memorisation sequence: the processor inputs and the labelled tail."""

    inputs: dict[str, torch.Tensor]
    n_labelled: int  # the last n tokens (the text and the end-of-turn token) are labelled
    text: str
    source: str  # where the text came from: a document field, "question" or "prompt"

    @property
    def targets(self) -> torch.Tensor:
        return self.inputs["input_ids"][0, -self.n_labelled :]


@dataclass
class LayerInput:
    """The last decoder layer's call arguments, captured from one forward."""

    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)

    def nbytes(self) -> int:
        flat: list = []
        for value in [*self.args, *self.kwargs.values()]:
            flat += list(value) if isinstance(value, (tuple, list)) else [value]
        return sum(t.numel() * t.element_size() for t in flat if isinstance(t, torch.Tensor))


def find_last_mlp(target: Target) -> LastMLP:
    """The last decoder layer and its MLP's linears, from the adapter's declarations."""
    adapter, model = target.loaded.adapter, target.loaded.model
    parts = adapter.language_model(model)
    llm = [c for c in target.components if c.role == "llm"]
    same = [c for c in llm if c.spec.layers == adapter.decoder_layers]
    chosen = same or llm
    if len(chosen) != 1:
        raise MMNeuronError(
            f"fastmem: adapter {adapter.name!r} has {len(chosen)} llm components on its decoder "
            f"layers '{adapter.decoder_layers}'; FastMem needs exactly one"
        )
    component = chosen[0]
    spec, last = component.spec, component.info.layers - 1
    if component.info.layers != len(parts.layers):
        raise MMNeuronError(
            f"fastmem: component {component.name!r} has {component.info.layers} layers, the "
            f"decoder {len(parts.layers)}"
        )
    names = {"gate": spec.width, "up": spec.up, "down": spec.output}
    if spec.up is None:  # an fc MLP: fc1 -> act -> fc2
        names = {"in": spec.width, "out": spec.output}
    linears = {}
    for role, relative in names.items():
        path = spec.path(relative, last)
        module = get_module(model, path, adapter.name, f"fastmem {role} projection")
        if not isinstance(module, nn.Linear):
            raise MMNeuronError(f"fastmem: '{path}' is a {type(module).__name__}, not nn.Linear")
        linears[path] = module
    output_path = spec.path(spec.output, last)
    mlp_path = output_path.rpartition(".")[0]
    layer_path = f"{adapter.decoder_layers}.{len(parts.layers) - 1}"
    mlp = get_module(model, mlp_path, adapter.name, "fastmem MLP") if mlp_path else model
    inside = set(map(id, mlp.modules()))
    if not all(id(m) in inside for m in linears.values()):
        raise MMNeuronError(f"fastmem: the trained linears are not all inside '{mlp_path}'")
    if id(mlp) not in set(map(id, parts.layers[-1].modules())):
        raise MMNeuronError(f"fastmem: '{mlp_path}' is not inside '{layer_path}'")
    config = getattr(model.config, "text_config", None) or model.config
    softcap = getattr(config, "final_logit_softcapping", None)
    return LastMLP(
        parts.layers[-1], layer_path, mlp, linears, parts.final_norm, parts.lm_head, softcap
    )


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return " ".join(v.strip() for v in value if v.strip())
    return ""


def memorised_text(request: Any, doc: Any, target: str = "context") -> tuple[str, str]:
    """``(text, source)``: what FastMem memorises for the document of ``request``."""
    metadata = request.metadata if isinstance(getattr(request, "metadata", None), dict) else {}
    fields: dict = doc if isinstance(doc, Mapping) else {}
    if target == "context":
        declared = metadata.get("fastmem_context")
        if declared is not None and declared not in fields:
            raise MMNeuronError(
                f"task {request.task_name!r} declares fastmem_context: {declared}, a field its "
                f"documents lack (they have: {', '.join(map(str, fields))})"
            )
        for name in [declared] if declared is not None else CONTEXT_FIELDS:
            text = _as_text(fields.get(name))
            if text:
                return text, name
    name = metadata.get("fastmem_question", "question")
    text = _as_text(fields.get(name))
    if text:
        return text, "question"
    prompt = request.args[0] if request.args and isinstance(request.args[0], str) else ""
    return prompt.replace("<image>", " ").strip(), "prompt"


def memorisation_inputs(
    adapter: Any, processor: Any, images: Sequence[Any], text: str, source: str = "text"
) -> Memorisation:
    """The text as an assistant turn after a user turn holding the images, tokenised.

    With a chat template (the processor's, as the adapter's ``format_prompt`` uses it):
    ``template([user: images])`` with the generation prompt is the unlabelled prefix,
    ``template([user: images, assistant: text])`` (trailing whitespace removed, so it ends
    with the end-of-turn token) the whole sequence. Without one: the adapter's prompt for an
    empty question (InstructBLIP: nothing; the processor adds the query tokens), then the
    text and the EOS token. The prefix's
    tokens must be a prefix of the whole's; the tokens after them are labelled.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if not text:
        raise MMNeuronError("fastmem: the document has no text to memorise")
    if getattr(processor, "chat_template", None):  # as the adapter's format_prompt decides
        content = [{"type": "image"} for _ in images] or [{"type": "text", "text": ""}]
        user = {"role": "user", "content": content}
        assistant = {"role": "assistant", "content": [{"type": "text", "text": text}]}
        prefix = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
        whole = processor.apply_chat_template([user, assistant], tokenize=False).rstrip()
    else:
        prefix = adapter.format_prompt(processor, "") if images else ""
        gap = " " if prefix and not prefix[-1].isspace() else ""
        whole = f"{prefix}{gap}{text}{tokenizer.eos_token or ''}"
    prefix_ids = tokenizer(prefix).input_ids
    whole_ids = tokenizer(whole).input_ids
    n = len(whole_ids) - len(prefix_ids)
    if n <= 0 or whole_ids[: len(prefix_ids)] != prefix_ids:
        raise MMNeuronError(
            "fastmem: the tokenizer splits the prompt differently once the text follows it; "
            "cannot tell which tokens are the memorised text"
        )
    if len(images) == 1:  # as the adapter encodes a prompt (Gemma 3: one <bos>, nested images)
        inputs = dict(adapter.encode(processor, list(images), [whole]))
    else:
        kwargs = {"images": list(images)} if images else {}
        inputs = dict(processor(text=[whole], return_tensors="pt", **kwargs))
    if inputs["input_ids"][0, -n:].tolist() != whole_ids[-n:]:
        raise MMNeuronError("fastmem: the processor's tokens end otherwise than the tokenizer's")
    return Memorisation(inputs, n, text, source)


class FastMemIntervention(Intervention):
    """Memorise each document's text in the last MLP, answer it, restore the weights."""

    kind = "fastmem"
    order = ORDER_PER_DOCUMENT
    per_document = True

    def __init__(
        self,
        lr: float = 1e-5,
        steps: int = 10,
        kl: float = 0.1,
        target: str = "context",
        cd: float | None = None,
    ):
        if not lr > 0:
            raise MMNeuronError(f"fastmem_lr={lr}: expected a learning rate > 0")
        if steps < 0:
            raise MMNeuronError(f"fastmem_steps={steps}: expected 0 or more steps")
        if not kl >= 0:
            raise MMNeuronError(f"fastmem_kl={kl}: expected a KL coefficient >= 0")
        if target not in TARGETS:
            raise MMNeuronError(f"fastmem_target={target!r}: expected one of {', '.join(TARGETS)}")
        if cd is not None and not cd >= 0:
            raise MMNeuronError(f"fastmem_cd={cd}: expected an alpha >= 0")
        self.lr, self.steps, self.kl, self.target, self.cd = lr, steps, kl, target, cd
        self.parts: LastMLP | None = None
        self._target: Target | None = None
        self.records: list[dict] = []

    # the Intervention protocol

    def attach(self, target: Target) -> None:
        if target.document is None:
            raise MMNeuronError(
                "fastmem needs each request's document: use it through the mmneuron "
                "lmms-eval model (run, run --grid, python -m lmms_eval --model mmneuron)"
            )
        self.parts = find_last_mlp(target)
        self._target = target
        self.records = []  # one per document memorised since attached

    def for_document(self, request: Any) -> contextlib.AbstractContextManager:
        return self._document(request)

    def describe(self) -> dict:
        tasks: dict[str, dict] = {}
        for record in self.records:
            tasks.setdefault(record["task"], []).append(record)
        summary = {}
        for task, records in tasks.items():
            sources: dict[str, int] = {}
            for r in records:
                sources[r["source"]] = sources.get(r["source"], 0) + 1
            summary[task] = {
                "documents": len(records),
                "text_from": sources,
                **{
                    key: statistics.fmean(r[key] for r in records)
                    for key in ("tokens", "nll_before", "nll_after", "kl_after", "seconds")
                },
            }
        return {
            "lr": self.lr,
            "steps": self.steps,
            "kl": self.kl,
            "target": self.target,
            "cd": self.cd,
            "optimizer": {"name": "AdamW", **ADAM, "clip_norm": CLIP_NORM},
            "trained": [] if self.parts is None else list(self.parts.linears),
            "master_dtype": "float32",
            "tasks": summary,
        }

    # one document

    @contextlib.contextmanager
    def _document(self, request: Any) -> Iterator[None]:
        if self.steps == 0:  # nothing is memorised: the model answers as it is
            yield
            return
        assert self._target is not None and self._target.document is not None
        start = time.perf_counter()
        doc = self._target.document(request)
        text, source = memorised_text(request, doc, self.target)
        images = self._images(request, doc)
        adapter = self._target.loaded.adapter
        memo = memorisation_inputs(adapter, self._target.processor(), images, text, source)
        with self.swapped() as weights:
            record = self.memorise(memo, weights)
            record.update(
                task=request.task_name,
                doc_id=request.doc_id,
                source=source,
                seconds=time.perf_counter() - start,
            )
            self.records.append(record)
            with self.contrastive(weights) if self.cd is not None else contextlib.nullcontext():
                yield

    def _images(self, request: Any, doc: Any) -> list:
        from PIL import Image

        to_visual = request.args[2] if len(request.args) > 2 else None
        visuals = to_visual(doc) if callable(to_visual) else []
        visuals = list(visuals or [])
        if not all(isinstance(v, Image.Image) for v in visuals):
            raise MMNeuronError(
                f"fastmem: task {request.task_name!r} gives visuals that are not images "
                "(video is not supported)"
            )
        return [v.convert("RGB") for v in visuals]

    # the weights

    @contextlib.contextmanager
    def swapped(self) -> Iterator[Weights]:
        """fp32 copies of the trained weights in place of the model's, for the block."""
        assert self.parts is not None
        weights = Weights(self.parts)
        try:
            weights.use("memorised")
            yield weights
        finally:
            weights.use("original")
            weights.remove_hooks()

    def memorise(self, memo: Memorisation, weights: Weights) -> dict:
        """Run the steps on one document's text; returns its record (losses, tokens)."""
        assert self.parts is not None and self._target is not None
        model = self._target.loaded.model
        with torch.inference_mode(False), torch.enable_grad():
            inputs = self.to_model(memo.inputs)
            cached = capture_layer_input(model, self._target.loaded.adapter, self.parts, inputs)
            targets = memo.targets.to(self.parts.lm_head.weight.device)
            n = memo.n_labelled
            optimizer = torch.optim.AdamW(weights.trained, lr=self.lr, **ADAM)
            reference = None
            check = _AdditivityCheck(self.parts) if self.cd is not None else None
            losses = []
            for step in range(self.steps):
                with check.watch(step == 0) if check else contextlib.nullcontext():
                    logits = cached_logits(self.parts, cached, n)
                log_probs = logits.log_softmax(-1)
                if reference is None:
                    reference = log_probs.detach()
                nll, kl = _losses(log_probs, targets, reference)
                loss = nll + self.kl * kl
                grads = torch.autograd.grad(loss, weights.trained)
                for param, grad in zip(weights.trained, grads, strict=True):
                    param.grad = grad
                torch.nn.utils.clip_grad_norm_(weights.trained, CLIP_NORM)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append((nll.item(), kl.item()))
            with torch.no_grad():
                with check.watch(False) if check else contextlib.nullcontext():
                    log_probs = cached_logits(self.parts, cached, n).log_softmax(-1)
                nll_after, kl_after = (float(x) for x in _losses(log_probs, targets, reference))
            if check is not None:
                check.verify()
        return {
            "tokens": n,
            "nll_before": losses[0][0],
            "nll_after": nll_after,
            "kl_after": kl_after,
            "losses": losses,
            "state_bytes": weights.state_bytes(optimizer) + cached.nbytes() + reference.nbytes,
        }

    def to_model(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Processor tensors on the model's device and dtype, as the adapter forwards them."""
        assert self._target is not None
        model, adapter = self._target.loaded.model, self._target.loaded.adapter
        param = next(model.parameters())
        moved = {
            key: value.to(param.device, param.dtype if value.is_floating_point() else None)
            for key, value in inputs.items()
            if isinstance(value, torch.Tensor)
        }
        return adapter.forward_kwargs(moved)

    # contrastive decoding

    @contextlib.contextmanager
    def contrastive(self, weights: Weights) -> Iterator[None]:
        """Every forward in the block gives ``(1 + a) z_mem - a z_orig`` as its logits."""
        assert self.parts is not None and self.cd is not None
        alpha = self.cd
        state: dict[str, Any] = {"delta": None, "inside": False}

        def on_mlp(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor):
            if state["inside"]:
                return None
            state["inside"] = True
            try:
                weights.use("original")
                original = module(*args, **kwargs)
            finally:
                weights.use("memorised")
                state["inside"] = False
            state["delta"] = original - output
            return None

        def on_norm(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor):
            delta = state["delta"]
            if state["inside"] or delta is None:
                return None
            state["delta"], state["inside"] = None, True
            try:
                original = module(args[0] + delta, *args[1:], **kwargs)
            finally:
                state["inside"] = False
            return (1 + alpha) * output - alpha * original

        handles = [
            self.parts.mlp.register_forward_hook(on_mlp, with_kwargs=True),
            self.parts.final_norm.register_forward_hook(on_norm, with_kwargs=True),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


class Weights:
    """The trained linears' original parameters and their fp32 copies, swapped in and out.

    The model's own ``Parameter`` objects are only ever moved aside and put back, never
    written. In a half-precision model, hooks run the linears in fp32 (the input is cast to
    the weight's dtype, the output projection's result back to the model's).
    """

    def __init__(self, parts: LastMLP):
        self.parts = parts
        self.original: dict[str, dict[str, nn.Parameter | None]] = {}
        self.memorised: dict[str, dict[str, nn.Parameter | None]] = {}
        self.trained: list[nn.Parameter] = []
        self._hooks: list[Any] = []
        dtypes = {m.weight.dtype for m in parts.linears.values()}
        self.half = dtypes != {torch.float32}
        for path, linear in parts.linears.items():
            weight, bias = linear.weight, linear.bias
            copy = nn.Parameter(weight.detach().to(torch.float32, copy=True))
            self.trained.append(copy)
            bias_copy = bias
            if bias is not None and self.half:
                bias_copy = nn.Parameter(bias.detach().to(torch.float32), requires_grad=False)
            self.original[path] = {"weight": weight, "bias": bias}
            self.memorised[path] = {"weight": copy, "bias": bias_copy}
        if self.half:
            dtype = next(iter(parts.linears.values())).weight.dtype
            for linear in parts.linears.values():
                self._hooks.append(linear.register_forward_pre_hook(_cast_to_weight))
            out = list(parts.linears.values())[-1]
            self._hooks.append(out.register_forward_hook(lambda _m, _a, y: y.to(dtype)))

    def use(self, which: str) -> None:
        """Put the ``original`` or the ``memorised`` parameters into the linears."""
        chosen = self.original if which == "original" else self.memorised
        for path, linear in self.parts.linears.items():
            for name, param in chosen[path].items():
                if param is not None:
                    linear._parameters[name] = param

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def state_bytes(self, optimizer: torch.optim.Optimizer) -> int:
        """Bytes FastMem holds for the trained weights: copies, gradients, Adam's moments."""
        total = sum(p.numel() * p.element_size() for p in self.trained) * 2  # copies, grads
        for state in optimizer.state.values():
            total += sum(t.numel() * t.element_size() for t in state.values() if t.dim())
        return total


def _cast_to_weight(module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    return (x.to(module.weight.dtype), *args[1:]) if x.dtype != module.weight.dtype else None


class _AdditivityCheck:
    """For CD: does the layer's output move exactly as its MLP's output does? (Llama-style
    ``residual + mlp(x)``; a norm after the MLP breaks it.) Compares step 0 and the end."""

    def __init__(self, parts: LastMLP):
        self.parts = parts
        self.outputs: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}
        self.eps = 1e-7

    @contextlib.contextmanager
    def watch(self, first: bool) -> Iterator[None]:
        seen: dict[str, torch.Tensor] = {}

        def keep(name: str):
            def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
                seen[name] = (output[0] if isinstance(output, tuple) else output).detach()

            return hook

        handles = [
            self.parts.mlp.register_forward_hook(keep("mlp")),
            self.parts.layer.register_forward_hook(keep("layer")),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        self.eps = torch.finfo(seen["layer"].dtype).eps
        self.outputs[first] = (seen["layer"].float(), seen["mlp"].float())

    def verify(self) -> None:
        (h0, m0), (h1, m1) = self.outputs[True], self.outputs[False]
        moved = m1 - m0
        error = float((h1 - h0 - moved).abs().max())
        allowed = 1e-3 * float(moved.abs().max()) + 8 * self.eps * float(h0.abs().max())
        if error > allowed:
            raise MMNeuronError(
                f"fastmem_cd: the output of '{self.parts.layer_path}' does not move as its "
                "MLP's output does (not residual + mlp(x)); contrastive decoding through the "
                "last MLP is exact only for such layers"
            )


def capture_layer_input(
    model: nn.Module, adapter: Any, parts: LastMLP, inputs: dict[str, Any]
) -> LayerInput:
    """One forward up to the last decoder layer's input (stopped there), without gradients."""
    captured: dict[str, Any] = {}

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["args"], captured["kwargs"] = args, kwargs
        raise _Stop

    handle = parts.layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise MMNeuronError(f"fastmem: '{parts.layer_path}' never ran during a forward")
    hidden = captured["args"][0] if captured["args"] else captured["kwargs"]["hidden_states"]
    if hidden.shape[1] != inputs["input_ids"].shape[1]:
        raise MMNeuronError(
            f"fastmem: the language model's sequence ({hidden.shape[1]} positions) is not "
            f"input_ids ({inputs['input_ids'].shape[1]}); cannot find the text's positions"
        )
    return LayerInput(captured["args"], captured["kwargs"])


def cached_logits(parts: LastMLP, cached: LayerInput, n: int) -> torch.Tensor:
    """fp32 logits ``[n, vocab]`` predicting the last ``n`` tokens: the last layer on its
    cached input, then the final norm and the LM head on the ``n`` positions before them."""
    out = parts.layer(*cached.args, **cached.kwargs)
    hidden = out[0] if isinstance(out, (tuple, list)) else out
    logits = parts.lm_head(parts.final_norm(hidden[:, -n - 1 : -1]))[0].float()
    if parts.softcap:
        logits = torch.tanh(logits / parts.softcap) * parts.softcap
    return logits


def full_logits(model: nn.Module, inputs: dict[str, Any], n: int) -> torch.Tensor:
    """The same logits from a whole forward of the model (for checking the cached path)."""
    return model(**inputs, use_cache=False).logits[0, -n - 1 : -1].float()


def _losses(
    log_probs: torch.Tensor, targets: torch.Tensor, reference: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL of ``targets`` and the per-token mean KL(p_ref || p_theta)."""
    nll = F.nll_loss(log_probs, targets)
    kl = F.kl_div(log_probs, reference, log_target=True, reduction="batchmean")
    return nll, kl
