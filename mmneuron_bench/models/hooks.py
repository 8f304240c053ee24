"""Forward hooks installed for the duration of a block and removed after it, also on an error.

Every intervention, recorder and analysis of the project installs its hooks through
:func:`forward_hooks`, so no hook outlives the block that needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from torch import nn

Hook = Callable[[nn.Module, tuple, object], object]


@contextlib.contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Register each ``(module, hook)`` as a forward hook in the block; remove them all after.

    A hook that returns a value replaces the module's output (PyTorch's forward-hook rule).
    """
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
