"""Interventions: changes to a loaded model that wrap lmms-eval's evaluation of any task.

An intervention is built from its kind's arguments, attached to the loaded model (where it
checks everything it can before any document runs), entered around the requests of each task
and, if it keeps state per document, around the requests of each document, then detached.
The ``mmneuron`` lmms-eval model, ``run``, the grid and the analyses hold interventions
without knowing their kind. Kinds are plugins (hook ``mmneuron_register_interventions``);
the built-in ones are the neuron mask and the weight edit.

Several interventions compose: they are entered in increasing :attr:`Intervention.order`
(weight edits 10, neuron masks 20, per-document interventions such as a test-time training
step 30), so a mask is already active while a later intervention runs the model, and they are
left in reverse order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mmneuron_bench.errors import MMNeuronError

if TYPE_CHECKING:
    from torch import nn

    from mmneuron_bench.models.adapter import Component, LoadedModel

ORDER_WEIGHTS = 10
ORDER_ACTIVATIONS = 20
ORDER_PER_DOCUMENT = 30


@dataclass
class Target:
    """What an intervention is attached to: the loaded model, its resolved components and its
    identity (as in stats, mask and edit files).

    The ``mmneuron`` lmms-eval model also gives what per-document interventions need:
    ``document(request)``, the lmms-eval document a request was built from, and
    :meth:`processor`, the model's processor (loaded on first use when ``loaded`` has none).
    Both are None elsewhere (the analyses run no per-document intervention).
    """

    loaded: LoadedModel
    components: Sequence[Component]
    identity: dict
    document: Callable[[Any], Any] | None = None
    load_processor: Callable[[], Any] | None = None

    def processor(self) -> Any:
        """The model's processor (``loaded.processor``, else loaded through ``load_processor``)."""
        if self.loaded.processor is None and self.load_processor is not None:
            self.loaded.processor = self.load_processor()
        return self.loaded.processor


class Intervention:
    """Base class of interventions; subclasses override what they need.

    ``attach`` is called once before any request; ``for_task`` and ``for_document`` return the
    contexts entered around a task's and a document's requests (no-ops by default);
    ``describe`` gives the JSON-ready provenance written beside the results.
    """

    kind: ClassVar[str]
    order: ClassVar[int] = ORDER_ACTIVATIONS
    per_document: ClassVar[bool] = False

    def attach(self, target: Target) -> None:
        """Check against the model and prepare; raise :class:`MMNeuronError` on a mismatch."""

    def for_task(self, task: str, metadata: Mapping[str, Any]) -> AbstractContextManager:
        """The context entered around the requests of ``task`` (its YAML ``metadata``)."""
        return contextlib.nullcontext()

    def for_document(self, request: Any) -> AbstractContextManager:
        """The context entered around the requests of one document (``request`` is the
        document's first lmms-eval request; ``per_document`` interventions only)."""
        return contextlib.nullcontext()

    def detach(self) -> None:
        """Undo whatever ``attach`` changed."""

    def recorded_models(self) -> dict[str, dict]:
        """``{what: model metadata}`` of every file this intervention applies (``{"the mask":
        mask.model}``), for :meth:`check_model`."""
        return {}

    def check_model(
        self, model: nn.Module, components: Sequence[Component], allow_other: bool = False
    ) -> dict[str, dict]:
        """Refuse files that do not fit ``model`` (a loaded model, or its skeleton before
        loading, with its resolved ``components``), or that were made on another model
        unless ``allow_other``; returns the metadata of those let through."""
        from mmneuron_bench.models.identity import check_files

        return check_files(self.recorded_models(), model, allow_other)

    def describe(self) -> dict:
        """JSON-ready provenance: what was changed, per task where it differs."""
        return {}


@dataclass(frozen=True)
class InterventionKind:
    """A registered kind of intervention and the model arguments it takes.

    ``args`` are the ``--model_args`` keys of the ``mmneuron`` lmms-eval model (and the
    ``--intervention KEY=VALUE`` keys of ``run``); the first one switches the kind on
    (``mask=FILE``, ``edit=FILE``, ``fastmem=1``), the others refine it and need the first.
    ``build`` gets the given ones as a dict (strings from a command line, or objects from
    Python) and returns the intervention, or None when the switch says off (``fastmem=0``).
    """

    name: str
    args: tuple[str, ...]
    build: Callable[[dict[str, Any]], Intervention | None]
    help: str = ""

    @property
    def switch(self) -> str:
        return self.args[0]

    def from_args(self, args: Mapping[str, Any]) -> Intervention | None:
        """The intervention the arguments ask for, or None when the switch is not given."""
        given = {key: args[key] for key in self.args if key in args}
        if self.switch not in given:
            if given:
                raise MMNeuronError(f"{sorted(given)[0]}= needs {self.switch}=")
            return None
        return self.build(given)


class Interventions:
    """The interventions held by one model, entered in their documented order.

    Each file an intervention applies must have been made on this model, unless
    ``allow_other_model``; such transfers are recorded in :meth:`describe` (``other_model``).
    """

    def __init__(self, allow_other_model: bool = False) -> None:
        self._held: dict[str, Intervention] = {}
        self._target: Target | None = None
        self.allow_other_model = allow_other_model
        self._transfers: dict[str, dict[str, dict]] = {}

    def attach_all(self, target: Target) -> None:
        self._target = target

    def add(self, intervention: Intervention) -> None:
        """Attach ``intervention``, replacing (and detaching) one of the same kind."""
        if self._target is None:
            raise RuntimeError("Interventions.attach_all() was not called")
        target = self._target
        transfers = intervention.check_model(
            target.loaded.model, target.components, self.allow_other_model
        )
        intervention.attach(target)
        self.remove(intervention.kind)
        self._held[intervention.kind] = intervention
        self._transfers[intervention.kind] = transfers

    def remove(self, kind: str) -> None:
        old = self._held.pop(kind, None)
        self._transfers.pop(kind, None)
        if old is not None:
            old.detach()

    def get(self, kind: str) -> Intervention | None:
        return self._held.get(kind)

    @property
    def ordered(self) -> list[Intervention]:
        return sorted(self._held.values(), key=lambda i: i.order)

    @property
    def per_document(self) -> bool:
        return any(i.per_document for i in self._held.values())

    def describe(self) -> dict:
        out = {}
        for kind, intervention in self._held.items():
            transfers = self._transfers.get(kind)
            described = intervention.describe()
            out[kind] = {**described, "other_model": transfers} if transfers else described
        return out
