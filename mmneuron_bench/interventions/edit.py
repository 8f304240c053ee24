"""The ``edit`` intervention: a weight edit (``neurons edit``) on around every task's requests
and removed after it, so the model's weights are bit-identical between tasks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from torch import nn

from mmneuron_bench.formats.common import sha256_file
from mmneuron_bench.formats.edit import WeightEdit
from mmneuron_bench.interventions.base import ORDER_WEIGHTS, Intervention, Target
from mmneuron_bench.models.adapter import Component


class EditIntervention(Intervention):
    """Applies a :class:`WeightEdit` around each task (checked against the model on attach)."""

    kind = "edit"
    order = ORDER_WEIGHTS

    def __init__(self, edit: WeightEdit, path: str | os.PathLike | None = None):
        self.edit = edit
        self.path = None if path is None else os.fspath(path)
        self.model = None

    def check_model(
        self, model: nn.Module, components: Sequence[Component], allow_other: bool = False
    ) -> dict[str, dict]:
        """An edit holds the weights it was made on: it never applies to another model."""
        self.edit.check_fingerprint(model)
        return {}

    def attach(self, target: Target) -> None:
        self.edit.check_model(target.loaded.model)
        self.model = target.loaded.model

    def for_task(self, task: str, metadata: Mapping[str, Any]) -> AbstractContextManager:
        return self.edit.applied(self.model)

    def describe(self) -> dict:
        where = {} if self.path is None else {"path": self.path, "sha256": sha256_file(self.path)}
        return {**where, "params": self.edit.params}
