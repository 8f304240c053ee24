"""The adapter interface: what mmneuron-bench needs to know about one model family.

An adapter is declarative where it can be: a table of :class:`ComponentSpec` (module paths,
most often built by the factories of :mod:`mmneuron_bench.models.components`), resolved
against the loaded model so that a path that moved between transformers releases fails
loudly, naming itself, instead of silently recording nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mmneuron_bench.errors import AdapterError
from mmneuron_bench.models.components import ROLES, ComponentInfo, ComponentSpec
from mmneuron_bench.models.placement import Placement, placement_of

# Token roles of one position of the language model's input.
PAD, TEXT, IMAGE = 0, 1, 2


@dataclass(frozen=True)
class Component:
    """A resolved component: its description, the activation module of each layer and the
    output projection (``nn.Linear`` reading the neurons) of each layer."""

    info: ComponentInfo
    spec: ComponentSpec
    modules: tuple[nn.Module, ...]
    outputs: tuple[nn.Linear, ...]
    unused_layers: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def role(self) -> str:
        return self.info.role

    def module_path(self, layer: int) -> str:
        """Path of the activation module of ``layer``."""
        return self.spec.path(self.spec.activation, layer)

    def output_path(self, layer: int) -> str:
        """Path of the output projection of ``layer``."""
        return self.spec.path(self.spec.output, layer)


@dataclass(frozen=True)
class LanguageModelParts:
    """The pieces of the language model that hidden-state and logit-lens analyses need.

    ``finish`` is the model's own processing of the LM head's output (PaliGemma's logit
    soft-capping), None where the logits are the LM head's output.
    """

    layers: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The next-token logits the model gives for decoder output ``hidden`` (logit lens)."""
        logits = self.lm_head(self.final_norm(hidden))
        return logits if self.finish is None else self.finish(logits)


@dataclass
class LoadedModel:
    adapter: ModelAdapter
    model: nn.Module
    processor: Any


def real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``attention_mask.cumsum(-1) - 1`` (clamped at 0): positions that skip padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def starts_with_bos(processor: Any, texts: list[str]) -> bool:
    """Whether every text already starts with the tokenizer's ``<bos>`` (a chat template that
    writes it), so that the tokenizer must not add a second one."""
    bos = getattr(getattr(processor, "tokenizer", None), "bos_token", None)
    return bool(bos) and all(text.startswith(bos) for text in texts)


def encode_image_lists(processor: Any, images: list, texts: list[str]) -> dict:
    """The processor's inputs with one image list per sample (processors that read a flat
    list as one sample's images) and no second ``<bos>`` where the prompts already start with
    one (:func:`starts_with_bos`)."""
    return processor(
        images=[[image] for image in images],
        text=texts,
        padding=True,
        return_tensors="pt",
        add_special_tokens=not starts_with_bos(processor, texts),
    )


def get_module(model: nn.Module, path: str, adapter: str, what: str) -> nn.Module:
    """``model.get_submodule(path)`` with an error that names the adapter and the path."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        found = ""
        parts = path.split(".")
        for end in range(len(parts), 0, -1):
            prefix = ".".join(parts[:end])
            try:
                model.get_submodule(prefix)
            except AttributeError:
                continue
            found = f"; '{prefix}' exists but has no '{parts[end]}'"
            break
        raise AdapterError(
            f"adapter {adapter!r}: {what} module '{path}' not found in "
            f"{type(model).__name__}{found}"
        ) from None


class ModelAdapter:
    """Base class of model adapters; subclass it and register an instance from a plugin.

    Subclasses set the class attributes and override methods where the family differs.
    """

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]] = ()
    architectures: ClassVar[tuple[str, ...]] = ()
    model_class: ClassVar[str]
    # The lmms-eval model that runs this family; None when lmms-eval has none (then the
    # adapter serves recording and analyses, and evaluation names its own base model).
    lmms_eval_model: ClassVar[str | None] = None
    # Why there is none (said when `run` is asked to evaluate without base=).
    lmms_eval_missing: ClassVar[str] = ""
    components: ClassVar[tuple[ComponentSpec, ...]]
    # The module sets of the paper's Table 1 (``--preset paper``): each row's name and the roles
    # it switches off. MMNeuron's "Vision Encoder" row switches the vision tower off together
    # with an MLP projector after it; Q-Former families override this (their row is the ViT).
    paper_module_sets: ClassVar[dict[str, str]] = {
        "none": "none",
        "vision": "vision+connector",
        "connector": "connector",
        "llm": "llm",
        "all": "all",
    }
    # Model types of the family this adapter knows and refuses: {model_type: reason} (a
    # mixture-of-experts variant without per-expert neurons). Said when no adapter handles it.
    refused_model_types: ClassVar[dict[str, str]] = {}
    # Roles the family has no neurons of, each with the reason ({"connector": "one Linear, no
    # activation"}): `adapters` shows it, and a module set naming the role is refused.
    no_neurons: ClassVar[dict[str, str]] = {}
    # token_type_ids of text appended after the prompt (PaliGemma: 1, its causal suffix).
    appended_token_type: ClassVar[int] = 0
    decoder_layers: ClassVar[str]
    final_norm: ClassVar[str]
    lm_head: ClassVar[str]

    def validate(self) -> None:
        """Fail early on an adapter class that is missing a declaration."""
        required = ("name", "model_class", "components", "decoder_layers", "final_norm", "lm_head")
        for attr in required:
            if not getattr(self, attr, None):
                raise TypeError(f"{type(self).__name__} does not set {attr!r}")
        if not (self.model_types or self.architectures):
            raise TypeError(f"{type(self).__name__} sets neither model_types nor architectures")
        for spec in self.components:
            if spec.role not in ROLES:
                raise TypeError(f"component {spec.name!r} has unknown role {spec.role!r}")
        for role in self.no_neurons:
            if role not in ROLES or role in {spec.role for spec in self.components}:
                raise TypeError(f"no_neurons names {role!r}, not a role without components")

    def handles(self, config: Any) -> bool:
        """Whether this adapter understands a model with this transformers config."""
        if getattr(config, "model_type", None) in self.model_types:
            return True
        return bool(set(getattr(config, "architectures", None) or ()) & set(self.architectures))

    def refusal(self, config: Any) -> str | None:
        """Why this adapter refuses a model of this config, handled or not (None: it does not
        refuse it): :attr:`refused_model_types` by default; a family whose variants share a
        model type (a mixture-of-experts LLM) overrides it. Checked before anything loads."""
        return self.refused_model_types.get(getattr(config, "model_type", None))

    def model_cls(self) -> type:
        import transformers

        return getattr(transformers, self.model_class)

    def load(
        self, pretrained: str, dtype: str | torch.dtype = "auto", device: str | Placement = "cpu"
    ) -> LoadedModel:
        """Load model and processor through ``from_pretrained`` (local path or hub id), on a
        device, or dispatched over devices (``"auto"`` or a :class:`Placement`)."""
        model = placement_of(device).load(self.model_cls(), pretrained, dtype)
        return LoadedModel(self, model, self.load_processor(pretrained))

    def load_processor(self, pretrained: str) -> Any:
        """``AutoProcessor.from_pretrained``, with a stand-in for a video processor that
        needs torchvision (:func:`~mmneuron_bench.models.compat.video_stand_in`)."""
        import transformers

        from mmneuron_bench.models.compat import video_stand_in

        with video_stand_in():
            return transformers.AutoProcessor.from_pretrained(pretrained)

    def skeleton(self, config: Any) -> nn.Module:
        """The model built on the meta device: its modules without loading any weights."""
        with torch.device("meta"):
            return self.model_cls()._from_config(config)

    def resolve(self, model: nn.Module) -> list[Component]:
        """Resolve every component's modules; a missing path raises :class:`AdapterError`."""
        return [self._resolve_one(model, spec) for spec in self.components]

    def _resolve_one(self, model: nn.Module, spec: ComponentSpec) -> Component:
        if spec.layers is None:
            n_layers = 1
        else:
            n_layers = len(get_module(model, spec.layers, self.name, f"{spec.name} layer list"))

        def modules(relative: str, what: str, linear: bool = True) -> list:
            found = []
            for i in range(n_layers):
                path = spec.path(relative, i)
                module = get_module(model, path, self.name, f"{spec.name} {what}")
                if linear and not isinstance(module, nn.Linear):
                    raise AdapterError(
                        f"adapter {self.name!r}: {spec.name} {what} '{path}' is a "
                        f"{type(module).__name__}, not an nn.Linear"
                    )
                found.append(module)
            return found

        activations = modules(spec.activation, "activation", linear=False)
        widths = {linear.out_features for linear in modules(spec.width, "width")}
        outputs = modules(spec.output, "output projection")
        if len(widths) != 1:
            raise AdapterError(f"adapter {self.name!r}: layers of {spec.name!r} differ in width")
        width = widths.pop()
        for layer, linear in enumerate(outputs):
            if linear.in_features != width:
                raise AdapterError(
                    f"adapter {self.name!r}: output projection '{spec.path(spec.output, layer)}' "
                    f"reads {linear.in_features} features, not the {width} neurons"
                )
        info = ComponentInfo(spec.name, spec.role, n_layers, width)
        unused = self.unused_layers(model, spec, n_layers)
        return Component(info, spec, tuple(activations), tuple(outputs), unused)

    def unused_layers(
        self, model: nn.Module, spec: ComponentSpec, n_layers: int
    ) -> tuple[int, ...]:
        """Layers of a component whose output the model never uses (none by default)."""
        return ()

    def language_model(self, model: nn.Module) -> LanguageModelParts:
        """Decoder layers, final norm and LM head of the language model."""
        return LanguageModelParts(
            get_module(model, self.decoder_layers, self.name, "decoder layers"),
            get_module(model, self.final_norm, self.name, "final norm"),
            get_module(model, self.lm_head, self.name, "LM head"),
            self.finish_logits(model),
        )

    def finish_logits(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What the model's forward does to the LM head's output before returning the logits
        (None: nothing). The logit lens applies it, so that its last layer is the model's own
        next-token distribution."""
        return None

    def image_token_id(self, model: nn.Module) -> int:
        """Id of the placeholder token the processor expands into image positions."""
        config = model.config
        token = getattr(config, "image_token_id", None)
        if token is None:
            token = getattr(config, "image_token_index", None)
        if token is None:
            raise AdapterError(f"adapter {self.name!r}: the model config has no image_token_id")
        return int(token)

    def token_roles(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Role of every language-model input position: PAD, TEXT or IMAGE ([batch, seq])."""
        input_ids = inputs["input_ids"]
        roles = torch.full_like(input_ids, TEXT)
        roles[input_ids == self.image_token_id(model)] = IMAGE
        attention = inputs.get("attention_mask")
        if attention is not None:
            roles[attention == 0] = PAD
        return roles

    def positions(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], token_scope: str = "all"
    ) -> dict[str, torch.Tensor | None]:
        """Real positions per :attr:`ComponentSpec.positions` kind (None: every position).

        ``token_scope`` (``all``, ``image`` or ``text``) narrows the language model's
        positions; vision and connector components see image features only. A key
        ``KIND@LAYER`` overrides ``KIND`` in that layer of a component (Llama 3.2 Vision's
        cross-attention layers).
        """
        self.check_token_scope(token_scope)
        roles = self.token_roles(model, inputs)
        wanted = {"all": roles != PAD, "image": roles == IMAGE, "text": roles == TEXT}
        kinds: dict[str, torch.Tensor | None] = {"all": None, "llm": wanted[token_scope]}
        if "qformer_attention_mask" in inputs:
            kinds["qformer_text"] = inputs["qformer_attention_mask"].bool()
        return kinds

    def check_token_scope(self, token_scope: str) -> None:
        """Refuse a token scope this family cannot count (before any model is loaded)."""
        if token_scope not in ("all", "image", "text"):
            raise ValueError(f"token scope must be all, image or text, not {token_scope!r}")

    def position_ids(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Position ids that make a padded sample see exactly the positions it has alone.

        The default skips padding wherever it sits (left, or between image and text):
        ``attention_mask.cumsum(-1) - 1``. A family whose model computes padding-aware
        positions itself (Qwen's 3-D rotary positions) returns None: pass nothing.
        """
        return real_positions(inputs["attention_mask"])

    def forward_kwargs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The model's keyword arguments for a forward of ``inputs``: the inputs, plus the
        padding-invariant :meth:`position_ids` where the family needs them."""
        positions = self.position_ids(inputs)
        return dict(inputs) if positions is None else {**inputs, "position_ids": positions}

    def append_tokens(
        self, inputs: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``inputs`` with text tokens ``ids`` ``[batch, k]`` appended to the language model's
        sequence (a loglikelihood continuation, generated tokens for teacher forcing); ``mask``
        is their attention mask (ones by default). ``token_type_ids``, where the processor
        gives them, grow by :attr:`appended_token_type` (0: text); other token-type inputs
        (Qwen-VL's ``mm_token_type_ids``) by 0, the text type."""
        ids = ids.to(inputs["input_ids"].device, inputs["input_ids"].dtype)
        mask = torch.ones_like(ids) if mask is None else mask.to(ids.device)
        out = copy.copy(inputs)  # a BatchFeature stays one
        out["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)
        attention = inputs["attention_mask"]
        out["attention_mask"] = torch.cat([attention, mask.to(attention.dtype)], dim=1)
        for key, types in inputs.items():  # token_type_ids, Qwen-VL's mm_token_type_ids, ...
            if key.endswith("token_type_ids") and isinstance(types, torch.Tensor):
                kind = self.appended_token_type if key == "token_type_ids" else 0
                added = torch.full_like(ids, kind, dtype=types.dtype)
                out[key] = torch.cat([types, added], dim=1)
        return out

    def format_prompt(self, processor: Any, question: str) -> str:
        """The text given to the processor for one image and one question.

        Uses the processor's chat template when it has one, as lmms-eval's models do.
        """
        if getattr(processor, "chat_template", None):
            content = [{"type": "image"}, {"type": "text", "text": question}]
            messages = [{"role": "user", "content": content}]
            return processor.apply_chat_template(messages, add_generation_prompt=True)
        image_token = getattr(processor, "image_token", "<image>")
        return f"{image_token}\n{question}"

    def paper_prompt(self, processor: Any, question: str) -> str:
        """The official MMNeuron identification prompt: ``'<image>\\n{question}'`` with the
        processor's image token, no chat template (``--preset paper``)."""
        image_token = getattr(processor, "image_token", "<image>")
        return f"{image_token}\n{question}"

    def build_inputs(
        self, processor: Any, images: list, questions: list[str], paper: bool = False
    ) -> dict:
        """Processor inputs for a batch of one image and one question per sample, prompted as
        lmms-eval's models prompt (:meth:`format_prompt`) or, with ``paper``, as the paper
        recorded (:meth:`paper_prompt`), encoded by :meth:`encode`."""
        prompt = self.paper_prompt if paper else self.format_prompt
        return self.encode(processor, images, [prompt(processor, q) for q in questions])

    def encode(self, processor: Any, images: list, texts: list[str]) -> dict:
        """The processor on a batch of prompts (one image each), padded."""
        return processor(images=images, text=texts, padding=True, return_tensors="pt")
