"""Workarounds for lmms-eval 0.7.3 traps, applied inside the ``mmneuron`` model only.

lmms-eval's own files are never edited. Each workaround checks the condition it fixes, so a
release without the trap passes through untouched:

- ``llava_hf`` and other models import ``decord`` or ``torchvision`` at import time, and
  ``qwen_vl_utils`` imports torchvision (lmms-eval then sets its reader to None):
  :func:`import_base` imports them with stand-in modules (only while importing, only for the
  libraries that are missing).
- ``llava_hf`` passes ``device_map=""`` to ``from_pretrained``, which transformers 5 refuses,
  and ``gemma3``'s ``device_map="auto"`` sends inputs to CUDA on a CPU machine:
  :func:`base_kwargs` sets ``device_map`` to the device (the process's own under
  ``accelerate launch``).
- ``llava_hf`` gives the tokenizer's chat template string content (``"<image>\n" + question``),
  which the templates of llava-hf checkpoints such as LLaVA-OneVision's render as nothing (they
  read typed content only): the prompt loses the question and the image token.
  :func:`base_kwargs` passes llava_hf's own ``chat_template`` argument: the checkpoint's
  template, made to read string content as one text item (:func:`string_content_template`).
- ``mistral3_vl`` defaults its ``temperature`` model argument to 0.6 and samples every task
  that does not set ``do_sample``: :func:`base_kwargs` passes ``temperature=0`` unless given.
- ``llama_vision`` never sets the attributes behind its ``batch_size``, ``tokenizer``,
  ``config`` and ``max_length`` properties (reading them raises): :func:`fill_unset_attributes`.
- ``instructblip`` returns prompt + answer on transformers 5, and ``llava_hf``,
  ``instructblip`` and ``mistral3_vl`` turn a failed ``generate`` into an empty answer:
  :func:`checked_generate`.
- ``llava_hf`` and ``instructblip`` assert batch size 1 mid-run, ``llama_vision`` ignores the
  batch size: :func:`check_batch_size`.
- A base without a ``dtype`` argument never gets one (the Qwen bases and ``gemma3`` assert
  on unknown arguments; ``internvl_hf`` swallows it and loads bfloat16): :func:`base_kwargs`
  drops it and :func:`honour_dtype` casts the loaded model to the dtype asked for.
- ``qwen2_vl`` pads a batch on the tokenizer's side (right gives wrong answers):
  :func:`pad_left` sets it to the left.
- ``qwen3_vl`` loads the mixture-of-experts class whenever the path contains ``A<n>B``:
  :func:`model_class_from_config` picks the class from the config's ``model_type``.
- The evaluator turns a ``(nll, is_greedy)`` tuple into its ``str``: :func:`loglikelihood_output`.
- ``evaluate()`` calls ``lm.clean()``, which deletes the model: ``MMNeuronLMM.clean`` keeps it.
- With a chat base (``internvl_hf``: no simple class), the evaluator builds chat requests, which
  exist for generation tasks only: a loglikelihood or multiple-choice task fails on an
  assertion while its requests are built. :func:`check_chat_tasks` refuses such a task up
  front, naming it and the base.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import inspect
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click
import torch

from mmneuron_bench.distributed import launched_processes, process_device
from mmneuron_bench.errors import MMNeuronError

# Bases whose HF model's generate() may return the prompt before the answer, while the base
# decodes everything it gets (instructblip on transformers 5). llava_hf slices on its own.
ECHOING_BASES = ("instructblip",)
# Bases whose generate_until asserts batch_size_per_gpu == 1 (lmms-eval 0.7.3).
ONE_REQUEST_BASES = ("llava_hf", "instructblip")
# Bases that take a batch size and answer one request at a time all the same.
UNBATCHED_BASES = ("llama_vision",)
# Bases that give the tokenizer's chat template string message content and take a
# `chat_template` argument that replaces the tokenizer's (lmms-eval 0.7.3).
STRING_CONTENT_BASES = ("llava_hf",)
# Bases that pad a batch on their tokenizer's padding side without forcing left padding.
LEFT_PADDING_BASES = ("qwen2_vl",)


def _unavailable(*_args: Any, **_kwargs: Any) -> None:
    raise MMNeuronError(
        "this needs decord or torchvision, which are not installed here (video input)"
    )


def _stand_in(name: str, **attributes: Any) -> types.ModuleType:
    """A module whose every other attribute is a function that raises :func:`_unavailable`."""
    module = types.ModuleType(name, "Stand-in installed by mmneuron-bench: not installed here.")
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    module.__getattr__ = lambda attr: _unavailable if not attr.startswith("__") else None
    return module


def _stand_in_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for the video libraries lmms-eval's models import at import time and that
    are not installed here: decord, and torchvision (which does not load beside CPU torch)."""
    from mmneuron_bench.models.compat import torchvision_missing

    modules = {}
    if importlib.util.find_spec("decord") is None:
        modules["decord"] = _stand_in("decord", VideoReader=_unavailable, cpu=_unavailable)
    if torchvision_missing():  # asked first: transformers caches that it has no torchvision
        functional = _stand_in("torchvision.transforms.functional")
        modes = types.SimpleNamespace(BICUBIC="bicubic", BILINEAR="bilinear", NEAREST="nearest")
        transforms = _stand_in(
            "torchvision.transforms", InterpolationMode=modes, functional=functional
        )
        io = _stand_in("torchvision.io")
        modules["torchvision"] = _stand_in(
            "torchvision", __version__="0.0.0", transforms=transforms, io=io
        )
        modules.update(
            {
                "torchvision.transforms": transforms,
                "torchvision.transforms.functional": functional,
                "torchvision.io": io,
            }
        )
    return modules


@contextlib.contextmanager
def _stand_ins() -> Iterator[None]:
    """The stand-in modules in ``sys.modules`` for the duration of an import."""
    modules = {k: v for k, v in _stand_in_modules().items() if k not in sys.modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in modules.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


# Modules an lmms-eval model imports optionally (turning a failed import into None and failing at
# the first request): imported under the stand-ins before the model, so they are real.
_OPTIONAL_IMPORTS = ("qwen_vl_utils",)


def import_base(name: str) -> type:
    """The lmms-eval model class ``name`` (its simple class, else its chat class), importable
    without decord and torchvision: their stand-ins exist only while it is imported."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    try:
        MODEL_REGISTRY_V2.resolve(name)
    except ValueError:
        raise MMNeuronError(f"unknown lmms-eval model {name!r} (base=)") from None
    with _stand_ins():
        for module in _OPTIONAL_IMPORTS:
            if module not in sys.modules and importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
        try:
            return MODEL_REGISTRY_V2.get_model_class(name, force_simple=True)
        except ValueError:
            return MODEL_REGISTRY_V2.get_model_class(name)


def base_kwargs(cls: type, args: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the base is built with: ``args`` plus the ``device_map`` fix.

    A base whose ``device_map`` defaults to ``""`` (refused by transformers 5), ``"auto"`` or
    ``"cuda"`` (both send inputs to CUDA on a CPU machine) gets the device instead, unless a
    ``device_map`` is given; under ``accelerate launch`` every base with a ``device_map`` gets
    the process's own device (``cuda:LOCAL_RANK`` or the CPU), so that none wraps the model
    for DDP (``llava_hf`` asserts a GPU for it) or spreads it over every GPU.
    ``max_batch_size`` (added by lmms-eval's CLI) is dropped unless the base takes it, and so
    is ``dtype`` (:func:`honour_dtype` casts the loaded model). A base whose ``temperature``
    defaults above 0 (``mistral3_vl``: tasks that do not set ``do_sample`` would be sampled)
    gets 0 unless one is given. A base of
    :data:`STRING_CONTENT_BASES` whose checkpoint's chat template drops string content gets
    ``chat_template`` (unless given): that template reading string content
    (:func:`string_content_template`).
    """
    params = inspect.signature(cls.__init__).parameters
    out = dict(args)
    temperature = params.get("temperature")
    if temperature is not None and "temperature" not in out:
        default = temperature.default
        if isinstance(default, (int, float)) and not isinstance(default, bool) and default > 0:
            out["temperature"] = 0
    base_module = cls.__module__.rsplit(".", 1)[-1]
    if base_module in STRING_CONTENT_BASES and "chat_template" in params and "pretrained" in out:
        if not out.get("chat_template"):
            template = string_content_template(str(out["pretrained"]), out.get("revision"))
            if template is not None:
                out["chat_template"] = template
    if "max_batch_size" not in params:
        out.pop("max_batch_size", None)
    if "dtype" not in params:
        out.pop("dtype", None)
    several = launched_processes() > 1
    device_map = params.get("device_map")
    if device_map is not None and (several or device_map.default in ("", None, "auto", "cuda")):
        if "device_map" not in out or out["device_map"] in ("", None):
            device = out.get("device", params["device"].default if "device" in params else None)
            if device:
                out["device_map"] = process_device(str(device))
                if several and "device" in params:
                    out["device"] = out["device_map"]
    return out


# Prepended to a chat template: each message with string content becomes one with a single
# text item, which templates written for typed content (llava-hf's) render.
_TYPED_CONTENT = (
    "{%- set _typed = namespace(messages=[]) -%}"
    "{%- for _message in messages -%}"
    "{%- if _message['content'] is string -%}"
    "{%- set _item = {'type': 'text', 'text': _message['content']} -%}"
    "{%- set _typed.messages = _typed.messages + [dict(_message, content=[_item])] -%}"
    "{%- else -%}{%- set _typed.messages = _typed.messages + [_message] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = _typed.messages -%}"
)
_PROBE = "mmneuron probe question"


def _renders_string_content(tokenizer: Any, template: str) -> bool:
    messages = [{"role": "user", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - a template that fails on strings does not take them
        return False
    return _PROBE in str(text)


def string_content_template(pretrained: str, revision: str | None = None) -> str | None:
    """The chat template of ``pretrained``'s tokenizer, made to take string message content,
    or None when it takes it already, has no single template, or cannot be read.

    The templates of llava-hf checkpoints (LLaVA-OneVision's conversion, and llava-hf
    checkpoints whose tokenizer got the processor's template) read ``message['content']`` as
    a list of typed items; ``llava_hf`` passes a string, which they render as nothing. The
    fix prepends :data:`_TYPED_CONTENT`, so that a string is rendered as one text item,
    exactly as the processor's typed messages are.
    """
    from transformers import AutoTokenizer

    try:
        kwargs = {"revision": revision} if revision else {}
        tokenizer = AutoTokenizer.from_pretrained(pretrained, **kwargs)
    except Exception:  # noqa: BLE001 - the base reports an unreadable checkpoint itself
        return None
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or _renders_string_content(tokenizer, template):
        return None
    fixed = _TYPED_CONTENT + template
    return fixed if _renders_string_content(tokenizer, fixed) else None


def pad_left(base_name: str, base: Any) -> None:
    """Left padding for a base that pads a batch on its tokenizer's side (``qwen2_vl``):
    a right-padded prompt makes the model continue after padding, which changes answers."""
    tokenizer = getattr(getattr(base, "processor", None), "tokenizer", None)
    if base_name in LEFT_PADDING_BASES and getattr(tokenizer, "padding_side", "left") != "left":
        tokenizer.padding_side = "left"


@contextlib.contextmanager
def model_class_from_config(cls: type) -> Iterator[None]:
    """While the base is built: its HF class chosen by the config, not the path's text.

    lmms-eval 0.7.3's ``qwen3_vl`` loads ``Qwen3VLMoeForConditionalGeneration`` whenever the
    path matches ``A\\d+B`` (a dense checkpoint in a folder named ``...-A1B-...`` included);
    its ``_resolve_model_class(pretrained, is_moe)`` gets ``is_moe`` from the config instead.
    """
    module = sys.modules.get(cls.__module__)
    original = getattr(module, "_resolve_model_class", None)
    if original is None:
        yield
        return

    def resolve(pretrained: str, is_moe: bool) -> Any:
        from transformers import AutoConfig

        model_type = getattr(AutoConfig.from_pretrained(pretrained), "model_type", "")
        return original(pretrained, model_type.endswith("_moe"))

    module._resolve_model_class = resolve
    try:
        yield
    finally:
        module._resolve_model_class = original


# Properties of lmms-eval models and the attributes they read (lmms-eval 0.7.3's llama_vision
# sets none of these attributes).
_PROPERTY_ATTRIBUTES = {
    "batch_size": "batch_size_per_gpu",
    "tokenizer": "_tokenizer",
    "config": "_config",
    "max_length": "_max_length",
}


def fill_unset_attributes(base: Any, batch_size: Any = 1) -> None:
    """Set the attributes behind the base's ``batch_size``, ``tokenizer``, ``config`` and
    ``max_length`` properties where reading the property raises AttributeError (only then):
    the batch size given, the processor's tokenizer, the model's config and its text config's
    ``max_position_embeddings``."""
    model = base.model
    text_config = model.config.get_text_config()
    values = {
        "batch_size": lambda: int(batch_size) if str(batch_size).isdigit() else 1,
        "tokenizer": lambda: getattr(getattr(base, "processor", None), "tokenizer", None),
        "config": lambda: model.config,
        "max_length": lambda: getattr(text_config, "max_position_embeddings", 2048),
    }
    for name, attribute in _PROPERTY_ATTRIBUTES.items():
        if not isinstance(getattr(type(base), name, None), property):
            continue
        try:
            getattr(base, name)
        except AttributeError:
            setattr(base, attribute, values[name]())


def check_batch_size(base: str, batch_size: Any) -> None:
    """Refuse up front a batch size the base would assert on mid-evaluation; say (on stderr)
    that a base which ignores it answers one request at a time."""
    if not (str(batch_size).isdigit() and int(batch_size) > 1):
        return
    if base in ONE_REQUEST_BASES:
        raise MMNeuronError(
            f"lmms-eval 0.7.3's {base!r} generates one request at a time; use batch size 1"
        )
    if base in UNBATCHED_BASES:
        click.echo(
            f"note: lmms-eval 0.7.3's {base!r} answers one request at a time whatever the "
            f"batch size ({batch_size} given); the answers are the same",
            err=True,
        )


def honour_dtype(model: torch.nn.Module, dtype: Any) -> None:
    """Cast ``model`` to ``dtype`` (a ``torch`` dtype name, or ``auto``/None: nothing asked)
    when the base loaded it in another (``internvl_hf`` hard-codes bfloat16). The bases cast
    their inputs to the model's dtype at each request, so the cast model runs as loaded."""
    if dtype in (None, "", "auto"):
        return
    wanted = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype), None)
    if not isinstance(wanted, torch.dtype):
        return  # the base has accepted or refused it already
    if any(p.is_floating_point() and p.dtype != wanted for p in model.parameters()):
        if getattr(model, "hf_device_map", None):
            raise MMNeuronError(
                f"the base loaded the model in {model.dtype}, not {wanted}, and a model "
                "dispatched over devices (device_map=auto) cannot be cast: give dtype=auto"
            )
        model.to(wanted)


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
    own = vars(model).get("generate")  # an instance's own generate, put back afterwards
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
        if own is None:
            del model.generate
        else:
            model.generate = own
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


def check_chat_tasks(base: str, is_simple: bool, tasks: Sequence[str], manager: Any) -> None:
    """Refuse, naming it, a task that is not a generation task when the base ``base`` is a
    chat model (``is_simple`` false): cheap, so callers check before loading the model.

    lmms-eval 0.7.3 builds the requests of a chat model from ``ConfigurableMessagesTask``,
    which asserts "Currently messages is used for generation only" for loglikelihood and
    multiple-choice tasks (so the ``mmneuron`` model's own loglikelihood is never asked).
    Only tasks are checked (a group's tasks are left to lmms-eval); a release whose chat
    requests take other output types is let through.
    """
    if is_simple:
        return
    from lmms_eval.api.task import ConfigurableMessagesTask
    from lmms_eval.utils import load_yaml_config

    try:
        source = inspect.getsource(ConfigurableMessagesTask.construct_requests)
    except (OSError, TypeError):  # no source to read: assume the 0.7.3 behaviour
        source = "used for generation only"
    if "used for generation only" not in source:
        return
    for name in tasks:
        entry = manager.task_index.get(name, {})
        if entry.get("type") != "task":
            continue
        config = load_yaml_config(yaml_path=entry["yaml_path"], mode="simple")
        output = config.get("output_type", "generate_until")
        if not str(output).startswith("generate"):
            raise MMNeuronError(
                f"task {name!r} is a {output} task, but lmms-eval model {base!r} is a chat "
                "model, for which lmms-eval 0.7.3 builds generation requests only"
            )
