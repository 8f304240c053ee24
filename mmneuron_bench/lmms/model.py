"""``mmneuron``: an lmms-eval model that wraps another and switches neurons off on every request.

::

    python -m lmms_eval --model mmneuron \\
        --model_args base=llava_hf,pretrained=PATH,mask=m.mask.safetensors,modules=llm \\
        --tasks docvqa_val

Model args: ``base`` (default: the adapter's lmms-eval model), ``adapter`` (default: chosen
from the config), ``mask``, ``modules`` (``all``, ``none`` or roles joined by ``+``),
``domain`` (``auto``, ``all`` or mask domains joined by ``+``), ``mode`` (``zero``/``mean``),
``stats`` (for ``mean``); every other argument (``pretrained``, ``dtype``, ``device``,
``device_map``, ...) goes to the base. Requests are grouped by task and each task runs with
its own domains' neurons off, generation and loglikelihood alike.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from lmms_eval.api.model import lmms

from mmneuron_bench.adapter import LoadedModel, ModelAdapter
from mmneuron_bench.editing import WeightEdit
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.lmms import workarounds
from mmneuron_bench.lmms.interventions import (
    AUTO,
    EditIntervention,
    MaskIntervention,
    TaskIntervention,
)
from mmneuron_bench.lmms.loglikelihood import continuation_nll
from mmneuron_bench.loading import load_config, model_identity, pick_adapter
from mmneuron_bench.mask_file import NeuronMask
from mmneuron_bench.plugins import get_registry
from mmneuron_bench.stats_file import ActivationStats


def pick_base(
    pretrained: str, adapter: str | None = None, base: str | None = None
) -> tuple[ModelAdapter, str]:
    """The adapter (named, or chosen from the config) and the lmms-eval model to wrap.

    Reads the config only: cheap enough to call before loading anything.
    """
    chosen = pick_adapter(
        get_registry(), load_config(pretrained), str(adapter) if adapter else None
    )
    base_name = str(base) if base else chosen.lmms_eval_model
    if not base_name:
        raise MMNeuronError(f"adapter {chosen.name!r} names no lmms-eval model; give base=NAME")
    return chosen, base_name


class MMNeuronLMM(lmms):
    """The base lmms-eval model with the interventions (the neuron mask) around every task."""

    is_simple = True

    def __init__(
        self,
        base: str | None = None,
        adapter: str | None = None,
        mask: str | os.PathLike | NeuronMask | None = None,
        modules: str | Sequence[str] = "all",
        domain: str = AUTO,
        mode: str = "zero",
        stats: str | os.PathLike | ActivationStats | None = None,
        edit: str | os.PathLike | None = None,
        **base_args: Any,
    ) -> None:
        super().__init__()
        if "pretrained" not in base_args:
            raise MMNeuronError("the mmneuron model needs pretrained=PATH_OR_ID")
        self.pretrained = str(base_args["pretrained"])
        self.adapter, self.base_name = pick_base(self.pretrained, adapter, base)
        if mask is None:
            defaults = (
                ("modules", modules, "all"),
                ("domain", domain, AUTO),
                ("mode", mode, "zero"),
            )
            given = [name for name, value, default in defaults if str(value) != default]
            if given or stats is not None:
                raise MMNeuronError(f"{(given or ['stats'])[0]}= needs mask=FILE")
        mask = NeuronMask.load(mask) if isinstance(mask, (str, os.PathLike)) else mask
        stats = ActivationStats.load(stats) if isinstance(stats, (str, os.PathLike)) else stats
        workarounds.check_batch_size(self.base_name, base_args.get("batch_size", 1))
        base_cls = workarounds.import_base(self.base_name)
        self.base = base_cls(**workarounds.base_kwargs(base_cls, base_args))
        if not isinstance(getattr(self.base, "model", None), torch.nn.Module):
            raise MMNeuronError(
                f"lmms-eval model {self.base_name!r} exposes no transformers model (.model)"
            )
        # The evaluator fills lm.task_dict; the base reads documents from its own.
        self.task_dict = self.base.task_dict
        self.components = self.adapter.resolve(self.model)
        self.interventions: dict[str, TaskIntervention] = {}
        # Called with (requests answered, requests in the call) as generation goes on.
        self.on_progress: Callable[[int, int], None] | None = None
        self._processor = None
        self.set_mask(mask, modules=modules, domain=str(domain), mode=str(mode), stats=stats)
        if edit is not None:
            weight_edit = WeightEdit.load(edit)
            weight_edit.check_model(self.model)
            self.interventions["edit"] = EditIntervention(self.model, weight_edit, os.fspath(edit))

    @property
    def model(self) -> torch.nn.Module:
        """The transformers model the base runs (unwrapped from accelerate)."""
        return self.base.model

    def set_mask(
        self,
        mask: NeuronMask | None,
        modules: str | Sequence[str] = "all",
        domain: str = AUTO,
        mode: str = "zero",
        stats: ActivationStats | None = None,
    ) -> None:
        """Switch to another mask, module set or domain (``None``: no neuron is switched off)."""
        if mask is None:
            self.interventions.pop("mask", None)
            return
        self.interventions["mask"] = MaskIntervention(
            self.components, mask, modules=modules, domain=domain, mode=mode, stats=stats
        )

    def identity(self) -> dict:
        """Adapter, name or path and fingerprint of the model (as in stats and mask files)."""
        return model_identity(LoadedModel(self.adapter, self.model, None), self.pretrained)

    def describe(self) -> dict:
        """JSON-ready provenance of the model and of every intervention so far."""
        return {
            "model": self.identity(),
            "base": self.base_name,
            **{name: i.describe() for name, i in self.interventions.items()},
        }

    # lmms-eval interface

    def generate_until(self, requests: list) -> list:
        return self._per_task(requests, self._generate)

    def generate_until_multi_round(self, requests: list) -> list:
        return self._per_task(requests, self._generate_multi_round)

    def loglikelihood(self, requests: list) -> list:
        return self._per_task(requests, self._loglikelihood)

    def clean(self) -> None:
        """Release cached memory but keep the model (lmms-eval's clean() deletes it).

        ``evaluate()`` calls ``clean()`` at the end of every evaluation; keeping the model
        lets one loaded model run under several masks in one process.
        """
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def set_cache_hook(self, cache_hook: Any) -> None:
        super().set_cache_hook(cache_hook)
        self.base.set_cache_hook(cache_hook)

    @property
    def rank(self) -> int:
        return self.base.rank

    @property
    def world_size(self) -> int:
        return self.base.world_size

    def __getattr__(self, name: str) -> Any:
        # Everything else (device, batch_size, tokenizer, accelerator, ...) is the base's.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    # internals

    def _per_task(self, requests: list, run: Callable[[list, Callable[[int], None]], list]) -> list:
        """Run the requests task by task, each inside that task's interventions, in order.

        Every task's contexts are built before any request runs, so a task without a domain
        fails before the others have spent time generating. ``run(requests, advance)`` calls
        ``advance(n)`` as it answers ``n`` more requests.
        """
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.task_name, []).append(i)
        contexts = {
            task: [i.for_task(task, requests[idx[0]].metadata) for i in self.interventions.values()]
            for task, idx in groups.items()
        }
        answered, finished = 0, 0

        def advance(n: int) -> None:
            nonlocal answered
            answered = min(answered + n, len(requests))
            if self.on_progress is not None:
                self.on_progress(answered, len(requests))

        advance(0)
        out: list = [None] * len(requests)
        for task, indices in groups.items():
            with ExitStack() as stack:
                for context in contexts[task]:
                    stack.enter_context(context)
                results = run([requests[i] for i in indices], advance)
            for i, result in zip(indices, results, strict=True):
                out[i] = result
            finished += len(indices)
            advance(max(finished - answered, 0))  # a base whose outputs were not counted
        return out

    def _generate(self, requests: list, advance: Callable[[int], None]) -> list:
        echoing = self.base_name in workarounds.ECHOING_BASES
        with workarounds.checked_generate(self.model, slice_prompt=echoing, on_output=advance):
            return self.base.generate_until(requests)

    def _generate_multi_round(self, requests: list, advance: Callable[[int], None]) -> list:
        echoing = self.base_name in workarounds.ECHOING_BASES
        with workarounds.checked_generate(self.model, slice_prompt=echoing):
            results = self.base.generate_until_multi_round(requests)
        advance(len(requests))
        return results

    def _loglikelihood(self, requests: list, advance: Callable[[int], None]) -> list:
        if self._processor is None:
            from transformers import AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.pretrained)
        out = []
        for request in requests:
            if len(request.args) != 6:
                raise MMNeuronError(
                    f"task {request.task_name!r}: loglikelihood requests without a document "
                    "(acc_mutual_info) are not supported"
                )
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            if not isinstance(continuation, str):  # output_type loglikelihood: doc_to_target
                continuation = continuation(doc)
            visuals = doc_to_visual(doc)
            if len(visuals) != 1:
                raise MMNeuronError(
                    f"task {task!r} document {doc_id} has {len(visuals)} images; "
                    "loglikelihood supports exactly one image per document"
                )
            nll, greedy = continuation_nll(
                self.adapter,
                self._processor,
                self.model,
                visuals[0].convert("RGB"),
                context,
                continuation,
            )
            out.append(workarounds.loglikelihood_output(nll, greedy))
            advance(1)
        return out
