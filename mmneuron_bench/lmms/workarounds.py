"""Workarounds for lmms-eval 0.7.3 traps, applied inside the ``mmneuron`` model only.

lmms-eval's own files are never edited. Each workaround checks the condition it fixes, so a
release without the trap passes through untouched:

- ``llava_hf`` imports ``decord`` at import time: :func:`import_base` retries the import with a
  stand-in ``decord`` module (only while importing, only when decord is missing).
- ``llava_hf`` passes ``device_map=""`` to ``from_pretrained``, which transformers 5 refuses:
  :func:`base_kwargs` sets ``device_map`` to the device in a single process.
- ``instructblip`` returns prompt + answer on transformers 5, and both built-in bases turn a
  failed ``generate`` into an empty answer: :func:`checked_generate`.
- ``llava_hf`` and ``instructblip`` assert batch size 1 mid-run: :func:`check_batch_size`.
- The evaluator turns a ``(nll, is_greedy)`` tuple into its ``str``: :func:`loglikelihood_output`.
- ``evaluate()`` calls ``lm.clean()``, which deletes the model: ``MMNeuronLMM.clean`` keeps it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

from mmneuron_bench.errors import MMNeuronError

# Bases whose HF model's generate() may return the prompt before the answer, while the base
# decodes everything it gets (instructblip on transformers 5). llava_hf slices on its own.
ECHOING_BASES = ("instructblip",)
# Bases whose generate_until asserts batch_size_per_gpu == 1 (lmms-eval 0.7.3).
ONE_REQUEST_BASES = ("llava_hf", "instructblip")


def _decord_unavailable(*_args: Any, **_kwargs: Any) -> None:
    raise MMNeuronError("decord is not installed; video input needs it (pip install decord)")


@contextlib.contextmanager
def _decord_shim() -> Iterator[None]:
    """A stand-in ``decord`` in ``sys.modules`` for the duration of an import."""
    shim = types.ModuleType("decord", "Stand-in installed by mmneuron-bench: decord is missing.")
    shim.VideoReader = _decord_unavailable
    shim.cpu = _decord_unavailable
    sys.modules["decord"] = shim
    try:
        yield
    finally:
        if sys.modules.get("decord") is shim:
            del sys.modules["decord"]


def import_base(name: str) -> type:
    """The simple (non-chat) lmms-eval model class ``name``, importable without decord."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    try:
        MODEL_REGISTRY_V2.resolve(name, force_simple=True)
    except ValueError:
        raise MMNeuronError(f"unknown lmms-eval model {name!r} (base=)") from None
    try:
        cls = MODEL_REGISTRY_V2.get_model_class(name, force_simple=True)
    except ModuleNotFoundError as exc:
        if exc.name != "decord" or importlib.util.find_spec("decord") is not None:
            raise
        with _decord_shim():
            cls = MODEL_REGISTRY_V2.get_model_class(name, force_simple=True)
    if not getattr(cls, "is_simple", True):
        raise MMNeuronError(
            f"lmms-eval model {name!r} has a chat implementation only; mmneuron wraps simple models"
        )
    return cls


def base_kwargs(cls: type, args: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the base is built with: ``args`` plus the ``device_map`` fix.

    In a single process, a base whose ``device_map`` defaults to ``""`` gets the device
    instead (under ``accelerate launch`` llava_hf sets the per-process device itself).
    ``max_batch_size`` (added by lmms-eval's CLI) is dropped unless the base takes it.
    """
    params = inspect.signature(cls.__init__).parameters
    out = dict(args)
    if "max_batch_size" not in params:
        out.pop("max_batch_size", None)
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1
    device_map = params.get("device_map")
    if single and device_map is not None and device_map.default in ("", None):
        if "device_map" not in out or out["device_map"] in ("", None):
            device = out.get("device", params["device"].default if "device" in params else None)
            if device:
                out["device_map"] = str(device)
    return out


def check_batch_size(base: str, batch_size: Any) -> None:
    """Refuse up front a batch size the base would assert on mid-evaluation."""
    if base in ONE_REQUEST_BASES and str(batch_size).isdigit() and int(batch_size) > 1:
        raise MMNeuronError(
            f"lmms-eval 0.7.3's {base!r} generates one request at a time; use batch size 1"
        )


@contextlib.contextmanager
def checked_generate(
    model: torch.nn.Module,
    slice_prompt: bool,
    on_output: Callable[[int], None] | None = None,
) -> Iterator[None]:
    """Patch ``model.generate`` for one base call: errors surface, echoed prompts go.

    The built-in bases catch every exception of ``generate`` and score an empty answer;
    the patched ``generate`` remembers the exception and it is raised as an MMNeuronError
    when the block ends. With ``slice_prompt``, an output that starts with the whole
    ``input_ids`` loses that prefix (the answer alone is decoded). ``on_output(n)`` is
    called after each call with the number of sequences it generated (progress).
    """
    original = model.generate
    failures: list[BaseException] = []

    def generate(*args: Any, **kwargs: Any) -> Any:
        try:
            out = original(*args, **kwargs)
        except Exception as exc:
            failures.append(exc)
            raise
        if on_output is not None and isinstance(out, torch.Tensor):
            on_output(out.shape[0])
        prompt = kwargs.get("input_ids")
        if slice_prompt and isinstance(out, torch.Tensor) and prompt is not None:
            n = prompt.shape[-1]
            if out.shape[-1] >= n and torch.equal(out[:, :n], prompt.to(out.device)):
                return out[:, n:]
        return out

    model.generate = generate
    try:
        yield
    finally:
        del model.generate
    if failures:
        first = str(failures[0]).strip().splitlines()
        detail = first[0] if first else type(failures[0]).__name__
        raise MMNeuronError(f"generation failed: {type(failures[0]).__name__}: {detail}")


def loglikelihood_output(nll: float, is_greedy: bool) -> Any:
    """One loglikelihood response in a form the evaluator passes through unchanged.

    lmms-eval 0.7.3's ``unwrap_generation_output`` keeps ``str`` and ``GenerationResult``
    and replaces anything else, a ``(nll, is_greedy)`` tuple included, by its ``str``;
    a ``GenerationResult`` carrying the tuple reaches ``process_results`` as the tuple.
    """
    from lmms_eval.api.instance import GenerationResult

    return GenerationResult(text=(nll, is_greedy))
