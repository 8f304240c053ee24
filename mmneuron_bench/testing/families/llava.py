"""LLaVA-1.5 and LLaVA-NeXT: CLIP 3 x 48, projector 1 x 40, Llama 2 x 80."""

from __future__ import annotations

from mmneuron_bench.testing.checkpoints import build_tiny_llava, build_tiny_llava_next
from mmneuron_bench.testing.families import Family

COMPONENTS = {"vision": ("vision", 3, 48), "projector": ("connector", 1, 40), "llm": ("llm", 2, 80)}

# The public 7B checkpoints: CLIP ViT-L/14-336 (24 x 4096), projector 4096, Vicuna-7B.
FULL = {
    "vision": ("vision", 24, 4096),
    "projector": ("connector", 1, 4096),
    "llm": ("llm", 32, 11008),
}

FAMILIES = [
    Family(
        "llava",
        build_tiny_llava,
        COMPONENTS,
        "llava_hf",
        unused={"vision": [2]},
        full_size={"llava-hf-llava-1.5-7b-hf": FULL},
    ),
    Family(
        "llava_next",
        build_tiny_llava_next,
        COMPONENTS,
        "llava_hf",
        unused={"vision": [2]},
        full_size={"llava-hf-llava-v1.6-vicuna-7b-hf": FULL},
    ),
]
