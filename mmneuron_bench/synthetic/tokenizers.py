"""Word-level tokenizers and LLaVA processors built offline, for checkpoints made without a hub.

The shipped miniature model and the tiny test checkpoints both use them: a ``tokenizers``
word-level model wrapped as ``PreTrainedTokenizerFast`` (Llama-like special tokens, left
padding, a chat template that takes string and typed content), saved and loaded the normal
Hugging Face way.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, ProcessorMixin

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
UNK_ID, BOS_ID, EOS_ID, PAD_ID, IMAGE_ID = range(len(SPECIAL_TOKENS))
# Handles string content (lmms-eval's `llava_hf`) and typed content (`apply_chat_template`).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %}"
    "ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %} "
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def word_level(specials: tuple[str, ...], unk: str, words: Sequence[str]) -> Tokenizer:
    """A lower-casing, whitespace-splitting word-level tokenizer: ``specials`` then ``words``."""
    vocab = {token: i for i, token in enumerate(specials + tuple(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(specials))
    return tok


def llm_tokenizer(words: Sequence[str], model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Llama-like, word-level over ``words``: `<s>` prepended, no `</s>`, left padding."""
    tok = word_level(SPECIAL_TOKENS, "<unk>", words)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
    )


def llava_processor(
    cls: type[ProcessorMixin],
    image_processor: object,
    tokenizer: PreTrainedTokenizerFast,
    patch_size: int,
) -> ProcessorMixin:
    """A LLaVA(-NeXT) processor over ``tokenizer`` with :data:`CHAT_TEMPLATE`."""
    # `default` drops CLS: the `+1` CLS token and the `-1` cancel, as in llava-hf checkpoints.
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
