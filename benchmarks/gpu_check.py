"""The GPU check: what recording and masking cost at the real size of LLaVA-NeXT-7B.

    bash benchmarks/gpu_check.sh                        # one CUDA GPU, no download
    bash benchmarks/gpu_check.sh --device cpu --small   # the same steps at toy size (dry run)

A random-weight LLaVA-NeXT with the dimensions of llava-hf/llava-v1.6-vicuna-7b-hf (the config
shipped in mmneuron_bench/testing/families/full_configs/) is built on the device in bfloat16,
with the offline word-level tokenizer of the test checkpoints: nothing is downloaded. Reported:

1. `mmneuron-bench bench` at batch 8: prefill time plain, while recording and with a random
   1 % mask, as ratios to plain, and the peak CUDA memory of each;
2. recording throughput in samples per second: the official procedure (batch 1, float32,
   autograd on, a hook counting x > 0 per neuron) against this tool's (batch 8, bfloat16,
   inference mode, the ActivationRecorder);
3. each figure against its target: record <= 1.05 x plain, mask <= 1.02 x plain, throughput
   >= 4 x the official procedure's.

`--small` shrinks every dimension, so the figures mean nothing: it exercises the code.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)

from mmneuron_bench.bench import PHASES, run_bench
from mmneuron_bench.console import print_table
from mmneuron_bench.models.adapter import LoadedModel
from mmneuron_bench.models.hookcheck import example_inputs
from mmneuron_bench.models.hooks import forward_hooks
from mmneuron_bench.plugins.registry import get_registry
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.synthetic.tokenizers import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    PAD_ID,
    llava_processor,
    llm_tokenizer,
)
from mmneuron_bench.tables import Table
from mmneuron_bench.testing.checkpoints import WORDS
from mmneuron_bench.testing.families import FULL_CONFIGS

FULL_CONFIG = FULL_CONFIGS / "llava-hf-llava-v1.6-vicuna-7b-hf"
TARGETS = {"record": 1.05, "mask": 1.02, "throughput": 4.0}
# --small: (hidden, MLP, layers, heads) of the vision tower and the language model, image size.
SMALL_VISION, SMALL_LLM, SMALL_IMAGE = (64, 256, 2, 2), (128, 512, 2, 4), 28


def build(device: str, dtype: torch.dtype, small: bool) -> LoadedModel:
    """The random-weight LLaVA-NeXT on ``device``, with a processor built offline."""
    config = AutoConfig.from_pretrained(FULL_CONFIG)
    vision, text = config.vision_config, config.text_config
    if small:
        scale = SMALL_IMAGE / vision.image_size
        config.image_grid_pinpoints = [
            [round(h * scale), round(w * scale)] for h, w in config.image_grid_pinpoints
        ]
        vision.image_size = SMALL_IMAGE
        for part, (hidden, mlp, layers, heads) in ((vision, SMALL_VISION), (text, SMALL_LLM)):
            part.hidden_size, part.intermediate_size = hidden, mlp
            part.num_hidden_layers, part.num_attention_heads = layers, heads
        text.num_key_value_heads = text.num_attention_heads
        text.head_dim = text.hidden_size // text.num_attention_heads
    size, patch = vision.image_size, vision.patch_size
    config.image_seq_length = (size // patch) ** 2
    config.image_token_index, config.pad_token_id = IMAGE_ID, PAD_ID
    text.bos_token_id, text.eos_token_id, text.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaNextForConditionalGeneration._from_config(config, dtype=dtype).eval()
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_grid_pinpoints=config.image_grid_pinpoints,
    )
    tokenizer = llm_tokenizer(WORDS, model_max_length=text.max_position_embeddings)
    processor = llava_processor(LlavaNextProcessor, image_processor, tokenizer, patch)
    return LoadedModel(get_registry().adapter("llava_next"), model, processor)


def _timed(model: torch.nn.Module, forward: dict, repeats: int) -> float:
    """Seconds of ``repeats`` forwards (after one warm-up), in the caller's autograd mode."""
    cuda = next(model.parameters()).is_cuda
    model(**forward)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        model(**forward)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ours(loaded: LoadedModel, batch_size: int, repeats: int) -> float:
    """Samples per second recorded as `record` does: the batch in inference mode, counted by
    the ActivationRecorder on the device."""
    model, adapter = loaded.model, loaded.adapter
    inputs = example_inputs(loaded, batch_size).to(model.dtype)
    recorder = ActivationRecorder(adapter.resolve(model), 1, next(model.parameters()).device)
    recorder.set_batch(0, adapter.positions(model, inputs))
    with recorder.hooks(), torch.inference_mode():
        seconds = _timed(model, adapter.forward_kwargs(inputs), repeats)
    return batch_size * repeats / seconds


def official(loaded: LoadedModel, repeats: int) -> float:
    """Samples per second recorded as the official MMNeuron code does: one sample at a time,
    float32 weights, autograd building its graph, a hook adding up (x > 0) per neuron. The
    model is cast to float32 in place."""
    model, adapter = loaded.model, loaded.adapter
    model.float().requires_grad_(True)
    inputs = example_inputs(loaded, 1).to(torch.float32)
    counts: dict[torch.nn.Module, torch.Tensor] = {}

    def count(module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> None:
        active = (output.detach() > 0).sum(dim=tuple(range(output.dim() - 1)))
        counts[module] = counts[module] + active if module in counts else active

    modules = [m for c in adapter.resolve(model) for m in c.modules]
    with forward_hooks((m, count) for m in modules), torch.enable_grad():
        seconds = _timed(model, adapter.forward_kwargs(inputs), repeats)
    return repeats / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="Toy dimensions (a dry run).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("this torch sees no CUDA device (use --device cpu --small for a dry run)")

    loaded = build(args.device, torch.bfloat16, args.small)
    model = loaded.model
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    size = "toy size (dry run)" if args.small else "LLaVA-NeXT-7B size"
    params = sum(p.numel() for p in model.parameters())
    print(f"random-weight LLaVA-NeXT, {size}: {params / 1e9:.2f} B parameters, bfloat16, {where}")

    bench = run_bench(loaded, batch_size=args.batch_size, repeats=args.repeats)
    ours_rate = ours(loaded, args.batch_size, args.repeats)
    official_rate = official(loaded, args.repeats)
    figures = {
        "device": where,
        "small": args.small,
        "parameters": params,
        "batch_size": args.batch_size,
        "tokens": bench.tokens,
        "seconds": bench.seconds,
        "ratios": {phase: bench.ratio(phase) for phase in PHASES},
        "peak_cuda_bytes": bench.peak_bytes,
        "recorder_bytes": bench.recorder_bytes,
        "samples_per_second": {"official": official_rate, "ours": ours_rate},
        "throughput_ratio": ours_rate / official_rate,
        "targets": TARGETS,
    }
    met = {
        "record": figures["ratios"]["record"] <= TARGETS["record"],
        "mask": figures["ratios"]["mask"] <= TARGETS["mask"],
        "throughput": figures["throughput_ratio"] >= TARGETS["throughput"],
    }
    figures["met"] = met
    _print(figures, met)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def _print(figures: dict, met: dict) -> None:
    def mb(value: int | None) -> str:
        return "-" if value is None else f"{value / 2**20:.0f}"

    batch, tokens = figures["batch_size"], figures["tokens"]
    rows = []
    for phase in PHASES:
        target = TARGETS.get(phase)
        rows.append(
            [
                phase,
                f"{figures['seconds'][phase] * 1000:.1f}",
                f"{figures['ratios'][phase]:.3f}",
                "-" if target is None else f"<= {target}",
                "-" if target is None else ("yes" if met[phase] else "NO"),
                mb(figures["peak_cuda_bytes"][phase]),
            ]
        )
    header = ["prefill", "median ms", "ratio to plain", "target", "met", "peak CUDA MB"]
    print_table(Table(f"batch {batch}, {tokens} tokens, bfloat16", header, rows))
    rates = figures["samples_per_second"]
    rows = [
        ["official: batch 1, float32, autograd on", f"{rates['official']:.2f}", "1.00", ""],
        [
            f"ours: batch {batch}, bfloat16, inference mode",
            f"{rates['ours']:.2f}",
            f"{figures['throughput_ratio']:.2f}",
            f">= {TARGETS['throughput']}: {'yes' if met['throughput'] else 'NO'}",
        ],
    ]
    print_table(Table("recording throughput", ["procedure", "samples/s", "ratio", "target"], rows))
    if figures["small"]:
        print("dry run at toy size: these figures measure nothing")


if __name__ == "__main__":
    main()
