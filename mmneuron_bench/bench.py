"""Timing of plain prefill, prefill while recording, and prefill with a 1 % mask, on one input."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import torch

from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.models.adapter import LoadedModel
from mmneuron_bench.models.hookcheck import example_inputs
from mmneuron_bench.models.placement import input_device
from mmneuron_bench.recording.recorder import ActivationRecorder
from mmneuron_bench.selection.random import random_mask

PHASES = ("plain", "record", "mask")


@dataclass
class BenchResult:
    times: dict[str, list[float]]  # seconds of every timed prefill, by phase, in repeat order
    peak_bytes: dict[str, int | None]  # CUDA peak allocated per phase (None on the CPU)
    recorder_bytes: int  # the recorder's counters: fixed, whatever the number of samples
    max_rss_bytes: int  # the process's peak resident memory
    masked_neurons: int
    tokens: int

    @property
    def seconds(self) -> dict[str, float]:
        """Median seconds per prefill, by phase."""
        return {phase: statistics.median(values) for phase, values in self.times.items()}

    def ratio(self, phase: str) -> float:
        """Median over repeats of this phase's time over the same repeat's plain time: the
        phases of one repeat run back to back, so pairing cancels the machine's slow drift."""
        pairs = zip(self.times[phase], self.times["plain"], strict=True)
        return statistics.median(t / plain for t, plain in pairs)


def run_bench(
    loaded: LoadedModel, batch_size: int = 4, repeats: int = 5, rate: float = 0.01
) -> BenchResult:
    """Median prefill time of each phase; phases alternate within each repeat to share noise."""
    model, adapter = loaded.model, loaded.adapter
    components = adapter.resolve(model)
    inputs = example_inputs(loaded, batch_size).to(model.dtype)
    forward = adapter.forward_kwargs(inputs)
    device = input_device(model)
    recorder = ActivationRecorder(components, 1, device)
    recorder.set_batch(0, adapter.positions(model, inputs))
    mask = random_mask({c.name: c.info for c in components}, rate, seed=0)
    deactivation = Deactivation(components, mask)
    contexts = {"plain": None, "record": recorder.hooks, "mask": lambda: deactivation}

    def prefill(phase: str) -> float:
        context = contexts[phase]
        with torch.inference_mode():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            if context is None:
                model(**forward)
            else:
                with context():
                    model(**forward)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start

    for phase in PHASES:  # warm-up
        prefill(phase)
    times = {phase: [] for phase in PHASES}
    peaks: dict[str, int | None] = {phase: None for phase in PHASES}
    for _ in range(repeats):
        for phase in PHASES:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[phase].append(prefill(phase))
            if device.type == "cuda":
                peaks[phase] = max(peaks[phase] or 0, torch.cuda.max_memory_allocated(device))
    return BenchResult(
        times=times,
        peak_bytes=peaks,
        recorder_bytes=recorder.counter_bytes(),
        max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        masked_neurons=sum(deactivation.counts.values()),
        tokens=int(inputs["attention_mask"].sum()),
    )


FASTMEM_PHASES = ("plain", "fastmem", "fastmem_cd")
# The bench's memorised text: about 64 tokens on a subword tokenizer.
BENCH_TEXT = " ".join(["The image shows a grey square in the middle of a plain background."] * 4)


@dataclass
class FastMemBench:
    times: dict[str, list[float]]  # seconds per document (memorise + answer), by phase
    peak_bytes: dict[str, int | None]  # CUDA peak allocated per phase (None on the CPU)
    state_bytes: int  # FastMem's own tensors: fp32 copies, gradients, Adam moments, caches
    parameter_bytes: int  # the model's weights
    labelled_tokens: int
    new_tokens: int

    @property
    def seconds(self) -> dict[str, float]:
        return {phase: statistics.median(values) for phase, values in self.times.items()}

    def ratio(self, phase: str) -> float:
        """Median over repeats of the phase's time over the same repeat's plain answer."""
        pairs = zip(self.times[phase], self.times["plain"], strict=True)
        return statistics.median(t / plain for t, plain in pairs)

    def memory_ratio(self, phase: str) -> float | None:
        """CUDA peak of the phase over the plain answer's (None on the CPU)."""
        peak, plain = self.peak_bytes[phase], self.peak_bytes["plain"]
        return None if peak is None or not plain else peak / plain


def run_fastmem_bench(
    loaded: LoadedModel,
    repeats: int = 3,
    steps: int = 10,
    lr: float = 1e-5,
    new_tokens: int = 16,
    alpha: float = 0.5,
) -> FastMemBench:
    """Time one document answered plainly, with FastMem, and with FastMem + CD.

    The document is one grey image, the question of :func:`example_inputs` and
    :data:`BENCH_TEXT` as its context; every answer is exactly ``new_tokens`` greedy tokens.
    FastMem's time includes everything it adds per document (building the memorisation
    sequence, the forward to the last layer, the steps and restoring the weights).
    """
    from types import SimpleNamespace

    from PIL import Image

    from mmneuron_bench.interventions.base import Target
    from mmneuron_bench.interventions.fastmem import FastMemIntervention

    model, adapter = loaded.model, loaded.adapter
    image = Image.new("RGB", (64, 64), (96, 128, 160))
    inputs = adapter.build_inputs(loaded.processor, [image], ["What is in the image?"])
    device = next(model.parameters()).device
    inputs = {
        k: v.to(device, model.dtype if v.is_floating_point() else None) for k, v in inputs.items()
    }
    doc = {"context": BENCH_TEXT}
    request = SimpleNamespace(
        args=("What is in the image?", {}, lambda _doc: [image], 0, "bench", "test"),
        metadata={},
        task_name="bench",
        doc_id=0,
    )
    components = adapter.resolve(model)
    plain = FastMemIntervention(lr=lr, steps=0)
    memorising = FastMemIntervention(lr=lr, steps=steps)
    contrastive = FastMemIntervention(lr=lr, steps=steps, cd=alpha)
    target = Target(loaded, components, {}, document=lambda _request: doc)
    for intervention in (plain, memorising, contrastive):
        intervention.attach(target)
    interventions = {"plain": plain, "fastmem": memorising, "fastmem_cd": contrastive}

    def answer(phase: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with interventions[phase].for_document(request), torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert out.shape[-1] - inputs["input_ids"].shape[-1] == new_tokens
        return time.perf_counter() - start

    for phase in FASTMEM_PHASES:  # warm-up
        answer(phase)
    times = {phase: [] for phase in FASTMEM_PHASES}
    peaks: dict[str, int | None] = {phase: None for phase in FASTMEM_PHASES}
    for _ in range(repeats):
        for phase in FASTMEM_PHASES:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            times[phase].append(answer(phase))
            if device.type == "cuda":
                peaks[phase] = max(peaks[phase] or 0, torch.cuda.max_memory_allocated(device))
    record = memorising.records[-1]
    return FastMemBench(
        times=times,
        peak_bytes=peaks,
        state_bytes=record["state_bytes"],
        parameter_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        labelled_tokens=record["tokens"],
        new_tokens=new_tokens,
    )
