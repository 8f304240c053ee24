"""Component descriptions shared by adapters, stats files and masks."""

from __future__ import annotations

import json
from dataclasses import dataclass

ROLES = ("vision", "connector", "llm")


@dataclass(frozen=True)
class ComponentInfo:
    """One family of MLP neurons: `layers x width` neurons with a role."""

    name: str
    role: str
    layers: int
    width: int

    def to_meta(self) -> dict:
        """The entry this component gets in a file's `components` metadata."""
        return {"role": self.role, "layers": self.layers, "width": self.width}


def components_to_json(components: dict[str, ComponentInfo]) -> str:
    """Serialise components as the `components` metadata string of stats and mask files."""
    return json.dumps({name: info.to_meta() for name, info in components.items()})


def components_from_json(text: str) -> dict[str, ComponentInfo]:
    """Parse a `components` metadata string; raises ValueError on a malformed entry."""
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
