"""Whether a file made on one model (stats, mask, neurons file, edit) may be applied to another.

Every command that applies such a file, and the ``mmneuron`` lmms-eval model, compares the
file's ``model`` metadata with the model here. The fingerprint (see
:func:`~mmneuron_bench.models.loading.fingerprint`) covers the config and every parameter's name
and shape, not the weights' values, so the comparison can be made from the config alone,
before any weight is loaded. A deliberate transfer (a mask found on a base model applied to
its fine-tune of another config) needs ``--allow-other-model`` (model argument
``allow_other_model=true``), and the outputs record it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from mmneuron_bench.errors import MaskMismatchError
from mmneuron_bench.models.loading import fingerprint, same_model

ALLOW_OPTION = "--allow-other-model"


def check_same_model(
    recorded: Mapping, model: nn.Module, what: str, allow_other: bool = False
) -> bool:
    """Refuse ``what`` (``"the mask"``, ``"x.stats.safetensors"``) unless its ``model`` metadata
    ``recorded`` describes ``model``; with ``allow_other`` a mismatch is let through.

    Returns whether the file was made on another model (a transfer to record).
    """
    if same_model(dict(recorded), model):
        return False
    if allow_other:
        return True
    raise MaskMismatchError(
        f"{other_model(recorded, model, what)}; give {ALLOW_OPTION} to apply it anyway"
    )


def other_model(recorded: Mapping, model: nn.Module, what: str) -> str:
    """``what was made on 'A' (fingerprint ...), not on 'B' (fingerprint ...)``: both models."""
    name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    was, now = str(recorded.get("fingerprint"))[:12], fingerprint(model)[:12]
    if _same_place(recorded.get("name_or_path"), name):
        return (
            f"{what} was made on another model in the same place {name!r}: its config or "
            f"parameter shapes have changed since (fingerprint {was}, now {now})"
        )
    return (
        f"{what} was made on another model: {recorded.get('name_or_path')!r} (fingerprint "
        f"{was}), not {name!r} (fingerprint {now})"
    )


def _same_place(recorded: Any, name: str) -> bool:
    """Whether a recorded model name and this one are the same hub id or local folder."""
    if not isinstance(recorded, str):
        return False
    return recorded == name or os.path.realpath(recorded) == os.path.realpath(name)


def check_files(
    files: Mapping[str, Mapping], model: nn.Module, allow_other: bool = False
) -> dict[str, dict]:
    """:func:`check_same_model` for every ``{what: model metadata}``; returns the metadata of
    those made on another model (empty unless ``allow_other``)."""
    return {
        what: dict(recorded)
        for what, recorded in files.items()
        if check_same_model(recorded, model, what, allow_other)
    }


def identity_of(pretrained: str, adapter_name: str | None = None) -> dict:
    """The ``model`` metadata files made on ``pretrained`` carry, from its config alone (no
    weights are loaded): what :func:`~mmneuron_bench.models.loading.model_identity` gives
    for the loaded model."""
    from mmneuron_bench.models.loading import load_config, pick_adapter
    from mmneuron_bench.plugins.registry import get_registry

    config = load_config(pretrained)
    adapter = pick_adapter(get_registry(), config, adapter_name)
    return {
        "adapter": adapter.name,
        "name_or_path": pretrained,
        "fingerprint": fingerprint(adapter.skeleton(config)),
    }
