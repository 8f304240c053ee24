"""A tiny LLaVA-NeXT with one hand-set llm neuron: the ground truth of the contribution tests."""

from __future__ import annotations

from pathlib import Path

import torch

PLANTED_LAYER, PLANTED_NEURON, PLANTED_WORD = 1, 17, "red"


def build_planted(source: Path, path: Path) -> Path:
    """The tiny LLaVA-NeXT with one hand-set llm neuron that always writes ``red``'s unembedding.

    The Llama MLP gets biases (all zero) so that neuron 17 of layer 1 has a constant activation
    ``silu(4) * 1``; its output column is red's unit unembedding and red's LM-head row is scaled
    by 10: p(red) is about 0.97 with the neuron and under 0.1 without it.
    """
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    base = LlavaNextForConditionalGeneration.from_pretrained(source)
    config = base.config
    config.text_config.mlp_bias = True
    model = LlavaNextForConditionalGeneration(config).eval()
    model.load_state_dict(base.state_dict(), strict=False)
    processor = AutoProcessor.from_pretrained(source)
    red = processor.tokenizer.convert_tokens_to_ids(PLANTED_WORD)
    k = PLANTED_NEURON
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for linear in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                linear.bias.zero_()
        mlp = model.model.language_model.layers[PLANTED_LAYER].mlp
        mlp.gate_proj.weight[k] = 0
        mlp.gate_proj.bias[k] = 4
        mlp.up_proj.weight[k] = 0
        mlp.up_proj.bias[k] = 1
        row = model.lm_head.weight[red]
        mlp.down_proj.weight[:, k] = row / row.norm()
        model.lm_head.weight[red] *= 10
    model.generation_config = base.generation_config
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
