"""Build a random-weight LLaVA-NeXT large enough for the matmuls to dominate a CPU prefill.

    python benchmarks/build_random_llava_next.py /tmp/random-llava-next
    mmneuron-bench bench --pretrained /tmp/random-llava-next --batch-size 4

Default size: CLIP 768 hidden / 3072 MLP / 6 layers at 224 px (patch 14), Llama 1024 hidden /
4096 MLP / 8 layers: about 180 M parameters (about 700 MB in float32).
"""

from __future__ import annotations

import argparse

from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)

from mmneuron_bench.synthetic.tokenizers import (
    BOS_ID,
    CHAT_TEMPLATE,
    EOS_ID,
    IMAGE_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    llm_tokenizer,
)
from mmneuron_bench.testing.checkpoints import WORDS, build_and_save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=14)
    parser.add_argument(
        "--vision", type=int, nargs=3, default=(768, 3072, 6), metavar=("HIDDEN", "MLP", "LAYERS")
    )
    parser.add_argument(
        "--llm", type=int, nargs=3, default=(1024, 4096, 8), metavar=("HIDDEN", "MLP", "LAYERS")
    )
    args = parser.parse_args()
    size, patch = args.image_size, args.patch_size

    def build():
        vision = CLIPVisionConfig(
            hidden_size=args.vision[0], intermediate_size=args.vision[1],
            num_hidden_layers=args.vision[2], num_attention_heads=args.vision[0] // 64,
            image_size=size, patch_size=patch, projection_dim=args.vision[0],
        )  # fmt: skip
        text = LlamaConfig(
            vocab_size=len(SPECIAL_TOKENS) + len(WORDS), hidden_size=args.llm[0],
            intermediate_size=args.llm[1], num_hidden_layers=args.llm[2],
            num_attention_heads=args.llm[0] // 64, num_key_value_heads=args.llm[0] // 64,
            max_position_embeddings=4096, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        )  # fmt: skip
        config = LlavaNextConfig(
            vision_config=vision, text_config=text, image_token_index=IMAGE_ID,
            image_grid_pinpoints=[[size, size]], image_seq_length=(size // patch) ** 2,
        )  # fmt: skip
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size},
            image_grid_pinpoints=[[size, size]],
        )  # fmt: skip
        tokenizer = llm_tokenizer(WORDS, model_max_length=text.max_position_embeddings)
        processor = LlavaNextProcessor(
            image_processor=image_processor, patch_size=patch, tokenizer=tokenizer,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=CHAT_TEMPLATE,
        )  # fmt: skip
        return LlavaNextForConditionalGeneration(config), processor

    print(build_and_save(args.out, build))


if __name__ == "__main__":
    main()
