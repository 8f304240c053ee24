"""Mistral 3 (``Mistral3ForConditionalGeneration``): Pixtral 3 x 48 (gated MLP), projector
1 x 40, Mistral 2 x 80.

Images keep their own size (longest edge at most 48 px, 8 px patches merged 2 x 2); the
projector's width is the text ``hidden_size`` (40), as in every Mistral 3 checkpoint.

Full-size config ``mistralai-Mistral-Small-3.1-24B-Instruct-2503``: the config fixture
``mistral_small_3_1_24b_config`` of NVIDIA/TensorRT-LLM
(``tests/unittest/_torch/modeling/test_modeling_mistral.py``), with its ``num_hidden_layers``
of 40 restored (the fixture cuts it to 4 and says so).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import processors
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    MistralConfig,
    PixtralImageProcessorPil,
    PixtralVisionConfig,
    PreTrainedTokenizerFast,
)

from mmneuron_bench.models.compat import pixtral_processor_stand_in
from mmneuron_bench.synthetic.tokenizers import word_level
from mmneuron_bench.testing.checkpoints import WORDS, build_and_save
from mmneuron_bench.testing.families import Family

# unk, bos, eos, pad first: the ids build_and_save's generation config uses (0-3).
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]",
            "[IMG_END]")  # fmt: skip
PATCH = 8
MERGE = 2
LONGEST_EDGE = 48
COMPONENTS = {
    "vision": ("vision", 3, 48),
    "projector": ("connector", 1, 40),
    "llm": ("llm", 2, 80),
}
# Mistral-Small-3.1's own template is far longer; this keeps its [INST] ... [/INST] shape.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST]"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}[IMG]"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}[/INST]"
    "{% elif message['role'] == 'assistant' %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{{ item['text'] }}{% endfor %}{% endif %}"
    "{{ eos_token }}{% endif %}{% endfor %}"
)


def mistral_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level; ``<s>`` prepended (as Mistral's tokenizers do), left padding with ``<pad>``."""
    tok = word_level(SPECIALS, "<unk>", WORDS)
    bos = SPECIALS.index("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def build_tiny_mistral3(path: str | Path) -> Path:
    """Mistral 3 with 8 px patches merged 2 x 2 and images up to 48 px."""
    pixtral_processor_stand_in()  # transformers' PixtralProcessor without torchvision
    from transformers.models.pixtral import PixtralProcessor

    def build():
        tokenizer = mistral_tokenizer()
        vision = PixtralVisionConfig(
            hidden_size=24,
            intermediate_size=COMPONENTS["vision"][2],
            num_hidden_layers=COMPONENTS["vision"][1],
            num_attention_heads=2,
            head_dim=12,
            image_size=LONGEST_EDGE,
            patch_size=PATCH,
            hidden_act="silu",
            initializer_range=0.2,
        )
        text = MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=COMPONENTS["projector"][2],
            intermediate_size=COMPONENTS["llm"][2],
            num_hidden_layers=COMPONENTS["llm"][1],
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=20,
            max_position_embeddings=512,
            initializer_range=0.2,  # large enough that switching neurons off moves answers
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
            sliding_window=None,
        )
        config = Mistral3Config(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
            spatial_merge_size=MERGE,
            vision_feature_layer=-1,
            tie_word_embeddings=False,
        )
        image_processor = PixtralImageProcessorPil(
            size={"longest_edge": LONGEST_EDGE},
            patch_size={"height": PATCH, "width": PATCH},
        )
        processor = PixtralProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            chat_template=CHAT_TEMPLATE,
        )
        return Mistral3ForConditionalGeneration(config), processor

    return build_and_save(path, build)


FAMILIES = [
    Family(
        "mistral3",
        build_tiny_mistral3,
        COMPONENTS,
        "mistral3_vl",
        image_sizes=((32, 32), (48, 16), (24, 40)),
        full_size={
            "mistralai-Mistral-Small-3.1-24B-Instruct-2503": {
                "vision": ("vision", 24, 4096),
                "projector": ("connector", 1, 5120),
                "llm": ("llm", 40, 32768),
            }
        },
    )
]
