"""``mmneuron``: an lmms-eval model that wraps another and applies interventions on every request.

::

    python -m lmms_eval --model mmneuron \\
        --model_args base=llava_hf,pretrained=PATH,mask=m.mask.safetensors,modules=llm \\
        --tasks docvqa_val

Model args: ``base`` (default: the adapter's lmms-eval model), ``adapter`` (default: chosen
from the config), ``allow_other_model`` (``true``: apply files made on another model, recorded
in the provenance), the arguments of every installed intervention kind (built in: ``mask``,
``modules`` (``all``, ``none`` or roles joined by ``+``), ``domain`` (``auto``, ``all`` or mask
domains joined by ``+``), ``mode`` (``zero``/``mean``), ``stats`` (for ``mean``), ``edit``,
``fastmem`` with ``fastmem_lr``, ``fastmem_steps``, ``fastmem_kl``, ``fastmem_target``,
``fastmem_cd``); with ``device_map=auto``, ``max_memory`` and ``offload_folder``
(:mod:`.devices`); every other argument (``pretrained``, ``dtype``, ``device``,
``device_map``, ...) goes to the base. Under ``accelerate launch`` the base runs on the
process's own device. Requests are grouped by task and each task runs inside every
intervention's context (with a mask: its own domains' neurons off), generation and
loglikelihood alike; an intervention that keeps state per document gets each document's
requests on their own.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from typing import Any

import torch
from lmms_eval.api.model import lmms

from mmneuron_bench.distributed import SINGLE, one_process_view, processes
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.base import Intervention, Interventions, Target
from mmneuron_bench.interventions.mask import MaskIntervention
from mmneuron_bench.interventions.targets import AUTO, DomainChoice
from mmneuron_bench.lmms import workarounds
from mmneuron_bench.lmms.devices import base_placement
from mmneuron_bench.lmms.loglikelihood import continuation_nll
from mmneuron_bench.models.adapter import LoadedModel, ModelAdapter
from mmneuron_bench.models.compat import video_stand_in
from mmneuron_bench.models.folder import check_model_folder, loading_errors
from mmneuron_bench.models.loading import load_config, model_identity, pick_adapter
from mmneuron_bench.models.placement import dispatch_defaults
from mmneuron_bench.plugins.registry import get_registry


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
        why = f" ({chosen.lmms_eval_missing})" if chosen.lmms_eval_missing else ""
        raise MMNeuronError(
            f"adapter {chosen.name!r} names no lmms-eval model; give base=NAME{why}"
        )
    return chosen, base_name


def _settings(request: Any) -> dict[int, dict]:
    """The dictionaries among a request's arguments (its generation settings), by position."""
    return {i: dict(a) for i, a in enumerate(request.args) if isinstance(a, dict)}


def interventions_from_args(args: dict[str, Any]) -> list[Intervention]:
    """Build the interventions the arguments ask for (removing their keys from ``args``);
    every file they name is read and checked here, before any model is loaded."""
    registry = get_registry()
    taken = registry.intervention_args()
    own = {key: args.pop(key) for key in list(args) if key in taken}
    built = []
    for registered in registry.interventions.values():
        intervention = registered.kind.from_args(own)
        if intervention is not None:
            built.append(intervention)
    return built


def _flag(value: bool | str) -> bool:
    """A yes/no model argument: a bool, or true/false, 1/0, yes/no as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "1", "yes", "false", "0", "no"):
        raise MMNeuronError(f"allow_other_model={value!r}: expected true or false")
    return text in ("true", "1", "yes")


class MMNeuronLMM(lmms):
    """The base lmms-eval model with interventions (a neuron mask, a weight edit, ...) around
    every task's requests."""

    is_simple = True

    def __init__(
        self,
        base: str | None = None,
        adapter: str | None = None,
        interventions: Sequence[Intervention] = (),
        allow_other_model: bool | str = False,
        split_requests: bool = False,
        **args: Any,
    ) -> None:
        """``split_requests``: under ``accelerate launch``, every process builds the base as a
        single process's on its own device, answers its share of each task's documents and
        gets every answer (:meth:`_per_task`); :func:`~mmneuron_bench.lmms.evaluate.evaluate`
        then runs lmms-eval's evaluator as one process on every process. Without it (as under
        lmms-eval's own CLI) the evaluator splits the documents and the model answers what it
        is given."""
        super().__init__()
        if "pretrained" not in args:
            raise MMNeuronError("the mmneuron model needs pretrained=PATH_OR_ID")
        self.pretrained = str(args["pretrained"])
        self.adapter, self.base_name = pick_base(self.pretrained, adapter, base)
        built = [*interventions, *interventions_from_args(args)]
        workarounds.check_batch_size(self.base_name, args.get("batch_size", 1))
        base_cls = workarounds.import_base(self.base_name)
        group = processes()
        self._split = group if split_requests else SINGLE
        args, placement = base_placement(self.base_name, base_cls, args, group)
        with one_process_view() if self.splits_requests else nullcontext():
            kwargs = workarounds.base_kwargs(base_cls, args)
            with (
                video_stand_in(),
                workarounds.model_class_from_config(base_cls),
                dispatch_defaults(placement),
            ):
                check_model_folder(self.pretrained, self.adapter)
                with loading_errors(self.pretrained):
                    self.base = base_cls(**kwargs)
        # What lmms-eval reads: the evaluator's processes (one when this model splits them).
        self._rank, self._world_size = (0, 1) if self.splits_requests else (group.rank, group.world)
        for name, value in (("_rank", self._rank), ("_world_size", self._world_size)):
            if hasattr(self.base, name):
                setattr(self.base, name, value)
        workarounds.pad_left(self.base_name, self.base)
        # lmms-eval builds plain or chat requests from the instance's flag: the base's.
        self.is_simple = getattr(base_cls, "is_simple", True)
        if not isinstance(getattr(self.base, "model", None), torch.nn.Module):
            raise MMNeuronError(
                f"lmms-eval model {self.base_name!r} exposes no transformers model (.model)"
            )
        workarounds.honour_dtype(self.model, args.get("dtype"))
        workarounds.fill_unset_attributes(self.base, args.get("batch_size", 1))
        # The evaluator fills lm.task_dict; the base reads documents from its own.
        self.task_dict = self.base.task_dict
        self.components = self.adapter.resolve(self.model)
        self.interventions = Interventions(allow_other_model=_flag(allow_other_model))
        self._processor = None
        loaded = LoadedModel(self.adapter, self.model, None)
        self.interventions.attach_all(
            Target(
                loaded,
                self.components,
                self.identity(),
                document=self.document,
                load_processor=lambda: self.processor,
            )
        )
        for intervention in built:
            self.interventions.add(intervention)
        # Called with (requests answered, requests in the call) as generation goes on.
        self.on_progress: Callable[[int, int], None] | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The transformers model the base runs (unwrapped from accelerate)."""
        return self.base.model

    @property
    def processor(self) -> Any:
        """The model's processor (the adapter's :meth:`load_processor`), loaded on first use."""
        if self._processor is None:
            self._processor = self.adapter.load_processor(self.pretrained)
        return self._processor

    def document(self, request: Any) -> Any:
        """The lmms-eval document a request was built from (``task_dict[task][split][id]``)."""
        split = request.metadata.get("split") if isinstance(request.metadata, dict) else None
        if split is None:  # the split is also the last argument of every request type
            split = request.args[-1]
        return self.task_dict[request.task_name][split][request.doc_id]

    @property
    def splits_requests(self) -> bool:
        """Whether this model answers a share of the requests and gathers the rest."""
        return self._split.world > 1

    def set_mask(
        self,
        mask: NeuronMask | None,
        modules: str | Sequence[str] = "all",
        domain: DomainChoice | str = AUTO,
        mode: str = "zero",
        stats: ActivationStats | None = None,
    ) -> None:
        """Switch to another mask, module set or domain (``None``: no neuron is switched off)."""
        if mask is None:
            self.interventions.remove("mask")
            return
        self.interventions.add(
            MaskIntervention(mask, modules=modules, domain=domain, mode=mode, stats=stats)
        )

    def identity(self) -> dict:
        """Adapter, name or path and fingerprint of the model (as in stats and mask files)."""
        return model_identity(LoadedModel(self.adapter, self.model, None), self.pretrained)

    def describe(self) -> dict:
        """JSON-ready provenance of the model and of every intervention so far."""
        return {
            "model": self.identity(),
            "base": self.base_name,
            **self.interventions.describe(),
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

    def __getattr__(self, name: str) -> Any:
        # Everything else (device, batch_size, tokenizer, accelerator, ...) is the base's.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    # internals

    def _per_task(self, requests: list, run: Callable[[list, Callable[[int], None]], list]) -> list:
        """Run the requests task by task, each inside that task's interventions, in order.

        Every task's contexts are built before any request runs, so a task without a domain
        fails before the others have spent time generating. With an intervention that keeps
        state per document, each document's requests run on their own inside its context.
        When this model splits requests, each process answers its share of every task's
        documents (:meth:`Processes.take`) and gets the others' answers.
        ``run(requests, advance)`` calls ``advance(n)`` as it answers ``n`` more requests.
        """
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.task_name, []).append(i)
        ordered = self.interventions.ordered
        contexts = {
            task: [i.for_task(task, requests[idx[0]].metadata) for i in ordered]
            for task, idx in groups.items()
        }
        shares = {task: self._share(requests, indices) for task, indices in groups.items()}
        total = sum(len(share) for share in shares.values())
        answered, finished = 0, 0

        def advance(n: int) -> None:
            nonlocal answered
            answered = min(answered + n, total)
            if self.on_progress is not None:
                self.on_progress(answered, total)

        advance(0)
        out: list = [None] * len(requests)
        for task, share in shares.items():
            answers = {}
            with ExitStack() as stack:
                for context in contexts[task]:
                    stack.enter_context(context)
                for part in self._documents(requests, share):
                    with ExitStack() as per_document:
                        if self.interventions.per_document:
                            for intervention in ordered:
                                per_document.enter_context(
                                    intervention.for_document(requests[part[0]])
                                )
                        results = run([requests[i] for i in part], advance)
                    answers.update(zip(part, results, strict=True))
            self._gather_answers(requests, answers, out)
            finished += len(share)
            advance(max(finished - answered, 0))  # a base whose outputs were not counted
        return out

    def _gather_answers(self, requests: list, answers: dict[int, Any], out: list) -> None:
        """Put every process's ``answers`` (request index: result) into ``out``.

        The bases write their generation settings into a request's arguments as they answer
        it (``llava_hf`` adds ``image_sizes``, drops ``until``), and lmms-eval logs those
        arguments with each sample: with the answers come the arguments the answering process
        left, written into this process's requests, so that every process logs what one
        process would.
        """
        if self.splits_requests:
            sent = {i: (result, _settings(requests[i])) for i, result in answers.items()}
            answers = {}
            for gathered in self._split.all_gather(sent):
                for i, (result, settings) in gathered.items():
                    answers[i] = result
                    for position, value in settings.items():
                        requests[i].args[position].clear()
                        requests[i].args[position].update(value)
        for i, result in answers.items():
            out[i] = result

    def _share(self, requests: list, indices: list[int]) -> list[int]:
        """This process's requests of ``indices``: those of its share of the documents."""
        if not self.splits_requests:
            return indices
        documents: dict[Any, list[int]] = {}
        for i in indices:
            documents.setdefault(requests[i].doc_id, []).append(i)
        return sorted(i for part in self._split.take(list(documents.values())) for i in part)

    def _documents(self, requests: list, indices: list[int]) -> list[list[int]]:
        """``indices`` in one part, or one part per document for per-document interventions
        (no part when there are no indices)."""
        if not indices:
            return []
        if not self.interventions.per_document:
            return [indices]
        parts: dict[Any, list[int]] = {}
        for i in indices:
            parts.setdefault(requests[i].doc_id, []).append(i)
        return list(parts.values())

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
                self.processor,
                self.model,
                visuals[0].convert("RGB"),
                context,
                continuation,
            )
            out.append(workarounds.loglikelihood_output(nll, greedy))
            advance(1)
        return out
