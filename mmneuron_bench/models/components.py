"""Components: one family of MLP neurons of a model, as files describe them and as adapters
declare them.

A file (stats, mask) says what a component *is*: :class:`ComponentInfo` (name, role,
``layers x width``). An adapter says where it *lives*: :class:`ComponentSpec`, module paths
relative to the loaded model. The factories at the end build the specs of the recurring MLP
shapes, so that a typical adapter is a short table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

ROLES = ("vision", "connector", "llm")


@dataclass(frozen=True)
class ComponentInfo:
    """One family of MLP neurons: ``layers x width`` neurons with a role."""

    name: str
    role: str
    layers: int
    width: int

    def to_meta(self) -> dict:
        """The entry this component gets in a file's ``components`` metadata."""
        return {"role": self.role, "layers": self.layers, "width": self.width}


def components_to_json(components: dict[str, ComponentInfo]) -> str:
    """Serialise components as the ``components`` metadata string of stats and mask files."""
    return json.dumps({name: info.to_meta() for name, info in components.items()})


def components_from_json(text: str) -> dict[str, ComponentInfo]:
    """Parse a ``components`` metadata string; raises ValueError on a malformed entry."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("components metadata is not a JSON object")
    out = {}
    for name, meta in raw.items():
        role, layers, width = meta["role"], int(meta["layers"]), int(meta["width"])
        if role not in ROLES or layers < 1 or width < 1:
            raise ValueError(f"component {name!r} has an invalid description {meta!r}")
        out[name] = ComponentInfo(name, role, layers, width)
    return out


@dataclass(frozen=True, kw_only=True)
class ComponentSpec:
    """Where one component lives in a model, as module paths.

    ``layers`` is the path of the ``ModuleList`` of layers; ``activation``, ``width`` and
    ``output`` are then relative to one layer. For a single-layer component ``layers`` is
    None and the three paths are relative to the model.

    - ``activation``: the module whose output are the neurons (for gated MLPs
      ``act_fn(gate_proj(x))``, before the ``up_proj`` product);
    - ``width``: the ``nn.Linear`` whose ``out_features`` is the number of neurons;
    - ``output``: the ``nn.Linear`` that reads the neurons (``down_proj``, ``fc2``): its
      column ``k`` is what neuron ``k`` writes (contribution scores and weight edits use it).

    ``positions`` says which rows of the activation are real tokens: ``"all"`` (vision
    patches, connector features), ``"llm"`` (the language model's sequence: padding and the
    token scope apply), or another kind the adapter's ``positions()`` returns (InstructBLIP's
    ``"qformer_text"``).

    ``up`` (optional, gated MLPs): the ``nn.Linear`` whose output multiplies the activation
    (``up_proj``). Only interventions that train an MLP's weights (FastMem) read it, and
    only then is it resolved; ``gated_mlp`` declares ``mlp.up_proj``.
    """

    name: str
    role: str
    activation: str
    width: str
    output: str
    layers: str | None = None
    positions: str = "all"
    up: str | None = None

    def path(self, relative: str, layer: int | str) -> str:
        """The full path of ``relative`` (one of the three paths) in layer ``layer``."""
        return relative if self.layers is None else f"{self.layers}.{layer}.{relative}"

    @property
    def pattern(self) -> str:
        """The activation's path with ``{i}`` for the layer (``...layers.{i}.mlp.act_fn``)."""
        return self.path(self.activation, "{i}")


def fc_mlp(
    name: str,
    role: str,
    layers: str,
    *,
    mlp: str = "mlp",
    fc1: str = "fc1",
    act: str = "activation_fn",
    fc2: str = "fc2",
    positions: str = "all",
) -> ComponentSpec:
    """``fc1 -> act -> fc2`` in every layer (CLIP, SigLIP and ViT towers, OPT)."""
    return _layer_mlp(name, role, layers, mlp, fc1, act, fc2, positions)


def gated_mlp(
    name: str,
    role: str,
    layers: str,
    *,
    mlp: str = "mlp",
    gate: str = "gate_proj",
    act: str = "act_fn",
    down: str = "down_proj",
    up: str | None = "up_proj",
    positions: str = "llm",
) -> ComponentSpec:
    """``act(gate_proj(x)) * up_proj(x) -> down_proj`` in every layer (Llama-style LLMs)."""
    return _layer_mlp(name, role, layers, mlp, gate, act, down, positions, up)


def _layer_mlp(
    name: str,
    role: str,
    layers: str,
    mlp: str,
    width: str,
    act: str,
    out: str,
    positions: str,
    up: str | None = None,
) -> ComponentSpec:
    return ComponentSpec(
        name=name,
        role=role,
        layers=layers,
        activation=_join(mlp, act),
        width=_join(mlp, width),
        output=_join(mlp, out),
        positions=positions,
        up=None if up is None else _join(mlp, up),
    )


def projector_mlp(
    name: str = "projector",
    role: str = "connector",
    *,
    at: str = "model.multi_modal_projector",
    linear_1: str = "linear_1",
    act: str = "act",
    linear_2: str = "linear_2",
) -> ComponentSpec:
    """A single ``linear_1 -> act -> linear_2`` projector (LLaVA's multi-modal projector)."""
    return ComponentSpec(
        name=name,
        role=role,
        activation=_join(at, act),
        width=_join(at, linear_1),
        output=_join(at, linear_2),
    )


def qformer_ffn(
    name: str,
    layers: str,
    *,
    part: str,
    output: str,
    positions: str = "all",
) -> ComponentSpec:
    """A Q-Former feed-forward block: ``part.dense -> part.intermediate_act_fn ->
    output.dense`` in every layer (``part`` is ``intermediate_query`` or ``intermediate``)."""
    return ComponentSpec(
        name=name,
        role="connector",
        layers=layers,
        activation=f"{part}.intermediate_act_fn",
        width=f"{part}.dense",
        output=f"{output}.dense",
        positions=positions,
    )


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
