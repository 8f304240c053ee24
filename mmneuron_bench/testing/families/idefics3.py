"""Idefics3 and SmolVLM: vision 3 x 48 (frames of 32 px), pixel shuffle + one Linear without
neurons (4 tokens per frame), Llama 2 x 80.

Each ships its family's processor: ``Idefics3Processor``, and ``SmolVLMProcessor`` built as
real SmolVLM checkpoints are loaded here, with stand-ins for ``num2words`` and for the
torchvision video processor (its saved settings kept, video refused).

Full-size configs (``full_configs/``): ``HuggingFaceM4-Idefics3-8B-Llama3`` from the hub
config's keys and a test fixture (rope settings of its parent Llama-3.1-8B-Instruct; 8.46 B
parameters); ``HuggingFaceTB-SmolVLM-Instruct`` (an Idefics3-class checkpoint) from copies of
its config (2.25 B); ``HuggingFaceTB-SmolVLM2-2.2B-Instruct`` (SmolVLM class) from the hub
config's keys, with the heads and vocabulary of SmolLM2-1.7B (2.25 B).
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
    SmolVLMProcessor,
    SmolVLMVisionConfig,
)

from mmneuron_bench.models.compat import no_video_processor, video_stand_in
from mmneuron_bench.testing.families import Family
from mmneuron_bench.testing.families._siglip import (
    IMAGE_SIZE,
    LLM_HIDDEN,
    LLM_LAYERS,
    LLM_WIDTH,
    PATCH_SIZE,
    VISION,
    save,
    tokenizer,
)

ROW_COL = tuple(f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6))
SPECIALS = (
    "<unk>", "<s>", "</s>", "<pad>",
    "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
) + ROW_COL  # fmt: skip
SCALE_FACTOR = 2
TOKENS_PER_FRAME = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2  # 4

# SmolVLM's default template (processing_smolvlm.DEFAULT_CHAT_TEMPLATE) without the leading
# <|im_start|>: "User:<image>question<end_of_utterance>\nAssistant:".
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}"
    "{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _build(path, model_cls, config_cls, vision_cls, processor_cls, **processor_kwargs) -> Path:
    def build():
        tok = tokenizer(SPECIALS, "<s>", "<end_of_utterance>", "<pad>", "<unk>")
        # Images are resized to a longest edge of 64, cut into 32 x 32 frames (2 x 2 for a
        # square image, 1 x 2 for a 2:1 one) and followed by a 32 x 32 global frame.
        image_processor = processor_kwargs.pop("image_processor")(
            size={"longest_edge": 2 * IMAGE_SIZE},
            max_image_size={"longest_edge": IMAGE_SIZE},
            do_image_splitting=True,
        )
        processor = processor_cls(
            image_processor=image_processor,
            tokenizer=tok,
            image_seq_len=TOKENS_PER_FRAME,
            chat_template=CHAT_TEMPLATE,
            **processor_kwargs,
        )
        ids = {t: i for i, t in enumerate(SPECIALS)}
        text = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=LLM_HIDDEN,
            intermediate_size=LLM_WIDTH,
            num_hidden_layers=LLM_LAYERS,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            initializer_range=0.1,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["<end_of_utterance>"],
            pad_token_id=ids["<pad>"],
        )
        config = config_cls(
            vision_config=vision_cls(**VISION, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
            text_config=text,
            scale_factor=SCALE_FACTOR,
            image_token_id=ids["<image>"],
            tie_word_embeddings=False,
        )
        return model_cls(config), processor

    return save(path, build, SPECIALS, "<s>", "<end_of_utterance>", "<pad>")


def build_tiny_idefics3(path: str | Path) -> Path:
    """Idefics3: vision 3 x 48, pixel shuffle + one Linear (4 tokens/frame), Llama 2 x 80."""
    return _build(
        path, Idefics3ForConditionalGeneration, Idefics3Config, Idefics3VisionConfig,
        Idefics3Processor, image_processor=Idefics3ImageProcessorPil,
    )  # fmt: skip


def build_tiny_smolvlm(path: str | Path) -> Path:
    """SmolVLM(2): the Idefics3 layout under ``SmolVLMForConditionalGeneration``, with a
    ``SmolVLMProcessor`` whose video processor is saved with SmolVLM2's settings."""
    from mmneuron_bench.adapters.smolvlm import num2words_stand_in

    video = {"video_processor_type": "SmolVLMVideoProcessor", "num_frames": 64, "fps": 1}
    with video_stand_in(), num2words_stand_in():
        return _build(
            path, SmolVLMForConditionalGeneration, SmolVLMConfig, SmolVLMVisionConfig,
            SmolVLMProcessor, image_processor=SmolVLMImageProcessorPil,
            video_processor=no_video_processor(**video),
        )  # fmt: skip


COMPONENTS = {"vision": ("vision", 3, 48), "llm": ("llm", 2, 80)}
# A square image gives 2 x 2 frames + a global one, a 2:1 image 1 x 2 + 1: a batch of both
# pads the second sample with empty frames, which the model drops before the vision tower.
IMAGE_SIZES = ((32, 32), (64, 32))
SMOLVLM_INSTRUCT = {"vision": ("vision", 27, 4304), "llm": ("llm", 24, 8192)}

FAMILIES = [
    Family(
        "idefics3",
        build_tiny_idefics3,
        COMPONENTS,
        None,
        image_sizes=IMAGE_SIZES,
        full_size={
            "HuggingFaceM4-Idefics3-8B-Llama3": {
                "vision": ("vision", 27, 4304),
                "llm": ("llm", 32, 14336),
            },
            "HuggingFaceTB-SmolVLM-Instruct": SMOLVLM_INSTRUCT,
        },
    ),
    Family(
        "smolvlm",
        build_tiny_smolvlm,
        COMPONENTS,
        None,
        image_sizes=IMAGE_SIZES,
        full_size={"HuggingFaceTB-SmolVLM2-2.2B-Instruct": SMOLVLM_INSTRUCT},
    ),
]
