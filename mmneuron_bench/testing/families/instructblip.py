"""InstructBLIP: ViT 3 x 48, Q-Former query and text FFNs 4 x 56, Llama 2 x 80."""

from __future__ import annotations

from mmneuron_bench.testing.checkpoints import build_tiny_instructblip
from mmneuron_bench.testing.families import Family

FAMILIES = [
    Family(
        "instructblip",
        build_tiny_instructblip,
        {
            "vision": ("vision", 3, 48),
            "qformer_query": ("connector", 4, 56),
            "qformer_text": ("connector", 4, 56),
            "llm": ("llm", 2, 80),
        },
        "instructblip",
        answers_move=False,
        full_size={
            "Salesforce-instructblip-vicuna-7b": {
                "vision": ("vision", 39, 6144),
                "qformer_query": ("connector", 12, 3072),
                "qformer_text": ("connector", 12, 3072),
                "llm": ("llm", 32, 11008),
            }
        },
    )
]
