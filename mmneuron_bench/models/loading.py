"""Loading a model and its adapter from a path or hub id, with errors that name the problem."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from torch import nn

from mmneuron_bench.errors import AdapterError, MMNeuronError
from mmneuron_bench.models.adapter import Component, LoadedModel, ModelAdapter
from mmneuron_bench.plugins.registry import PluginRegistry, get_registry
from mmneuron_bench.versions import check_requirements


def load_config(pretrained: str) -> Any:
    """The transformers config at ``pretrained``; a missing model is a one-line error."""
    check_requirements()
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(pretrained)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MMNeuronError(f"cannot load model config from {pretrained!r}: {first}") from None


def pick_adapter(registry: PluginRegistry, config: Any, adapter_name: str | None) -> ModelAdapter:
    """The named adapter (checked against the config), or the one that handles the config;
    a model the adapter refuses (:meth:`ModelAdapter.refusal`) is a one-line error."""
    if adapter_name is None:
        return registry.adapter_for_config(config)
    adapter = registry.adapter(adapter_name)
    reason = adapter.refusal(config)
    if reason:
        raise AdapterError(f"adapter {adapter_name!r}, model type {config.model_type!r}: {reason}")
    if not adapter.handles(config):
        raise AdapterError(
            f"adapter {adapter_name!r} does not handle model type {config.model_type!r}"
        )
    return adapter


def load_model(
    pretrained: str,
    adapter_name: str | None = None,
    dtype: Any = "auto",
    device: str = "cpu",
    registry: PluginRegistry | None = None,
) -> LoadedModel:
    """Pick the adapter (named, or the one that handles the config) and load model and
    processor through ``from_pretrained`` (a local folder or a hub id); a broken folder is
    refused before any weight is read (:mod:`mmneuron_bench.models.folder`)."""
    from mmneuron_bench.models.folder import check_model_folder, loading_errors

    registry = registry or get_registry()
    adapter = pick_adapter(registry, load_config(pretrained), adapter_name)
    check_model_folder(pretrained, adapter)
    with loading_errors(pretrained):
        return adapter.load(pretrained, dtype=dtype, device=device)


def resolve_components(
    pretrained: str, adapter_name: str | None = None, check: bool = False
) -> tuple[ModelAdapter, list[Component]]:
    """Components of a model; without ``check`` no weights are loaded (meta-device skeleton)."""
    from mmneuron_bench.models.hookcheck import check_hooks_fire

    config = load_config(pretrained)
    adapter = pick_adapter(get_registry(), config, adapter_name)
    if not check:
        return adapter, adapter.resolve(adapter.skeleton(config))
    loaded = load_model(pretrained, adapter.name)
    components = adapter.resolve(loaded.model)
    check_hooks_fire(loaded, components)
    return adapter, components


def model_identity(loaded: LoadedModel, pretrained: str) -> dict:
    """The ``model`` metadata of stats, mask and edit files: adapter, name or path, fingerprint."""
    return {
        "adapter": loaded.adapter.name,
        "name_or_path": pretrained,
        "fingerprint": fingerprint(loaded.model),
    }


def fingerprint(model: nn.Module) -> str:
    """sha256 of the config and of every parameter's name and shape: the same architecture
    and size give the same fingerprint, whatever the folder, dtype or device it was loaded
    with."""
    return _digest(
        model, _without(model.config.to_dict(), ("dtype", "torch_dtype", "_name_or_path"))
    )


def same_model(recorded: dict, model: nn.Module) -> bool:
    """Whether a file's ``model`` metadata describes ``model``.

    Files written before 0.2 fingerprinted the config with the folder it was loaded from
    (``_name_or_path``); for them the fingerprint is recomputed with the recorded name.
    """
    found = recorded.get("fingerprint")
    if found == fingerprint(model):
        return True
    config = _without(model.config.to_dict(), ("dtype", "torch_dtype"))
    config["_name_or_path"] = recorded.get("name_or_path", "")
    return found == _digest(model, config)


def _digest(model: nn.Module, config: dict) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, param in model.named_parameters():
        digest.update(f"{name}:{tuple(param.shape)};".encode())
    return digest.hexdigest()


def _without(value: Any, keys: tuple[str, ...]) -> Any:
    """A config dict without the entries ``keys``, at every level (sub-configs included)."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value
