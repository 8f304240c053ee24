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
