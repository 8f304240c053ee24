"""Recording activation statistics of a model over domains of lmms-eval documents.

Each domain's samples are run through the model's prefill in batches of one domain, with
:class:`~mmneuron_bench.recording.ActivationRecorder` hooks counting on the device. The
run writes a checkpoint (an ordinary stats file whose ``samples`` say how far each domain
got) so that ``resume`` continues without counting a sample twice. Under ``accelerate
launch`` every process takes every W-th sample and the counts are summed at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmneuron_bench.domains.tasks import (
    Sample,
    domain_samples,
    expand_task_names,
    load_tasks,
    sample_content,
    task_manager,
)
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.documents import Documents
from mmneuron_bench.formats.stats import ActivationStats, stats_mismatch
from mmneuron_bench.models.adapter import LoadedModel
from mmneuron_bench.models.loading import model_identity
from mmneuron_bench.models.placement import input_device
from mmneuron_bench.recording.recorder import ActivationRecorder

CHECKPOINT_SECONDS = 60.0


@dataclass
class RecordPlan:
    """What is recorded; two runs with the same plan count the same samples in the same order."""

    pretrained: str
    domains: dict[str, list[str]]
    include_paths: list[str] = field(default_factory=list)
    limit: int | None = None
    token_scope: str = "all"
    prompt: str = "default"  # or "paper": the bare question after the image token

    def digest(self, model: dict) -> str:
        """The checkpoint's name: the same for the same settings and model, however the paths
        are spelled (local folders are resolved; the model counts by its fingerprint)."""
        plan = asdict(self)
        if plan["prompt"] == "default":  # digests of earlier releases stay valid
            del plan["prompt"]
        plan["pretrained"] = _resolved(self.pretrained)
        plan["include_paths"] = [_resolved(p) for p in self.include_paths]
        model = {k: v for k, v in model.items() if k != "name_or_path"}
        text = json.dumps({"plan": plan, "model": model}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resolved(path: str) -> str:
    """An existing local path, resolved; anything else (a hub id) as given."""
    return os.path.realpath(path) if os.path.exists(path) else path


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1


def checkpoint_path(out: Path, digest: str, shard: Shard) -> Path:
    return out.with_name(f"{out.name}.{digest}.rank{shard.rank}-of-{shard.world}.partial")


@dataclass(frozen=True)
class PlannedSamples:
    """The tasks of a plan and, per domain, the samples this shard counts, in order."""

    tasks: dict[str, Any]
    samples: dict[str, list[Sample]]

    def documents(self, counted: dict[str, int]) -> Documents:
        """``{domain: {task: ids}}`` of the first ``counted[domain]`` samples of each domain."""
        out: Documents = {}
        for domain, samples in self.samples.items():
            ids: dict[str, list[int]] = {}
            for sample in samples[: counted.get(domain, 0)]:
                ids.setdefault(sample.task, []).append(sample.index)
            out[domain] = {task: sorted(found) for task, found in ids.items()}
        return out


def plan_samples(plan: RecordPlan, shard: Shard = Shard()) -> PlannedSamples:
    """Load the plan's tasks (tags and groups expanded) and choose this shard's samples; a
    domain without documents is refused. Needs no model: run it before loading one."""
    names = [t for tasks in plan.domains.values() for t in tasks]
    manager = task_manager(names, plan.include_paths)
    tasks = load_tasks(names, plan.include_paths, manager)
    samples = {}
    for domain, given in plan.domains.items():
        members = expand_task_names(manager, given)
        samples[domain] = domain_samples(tasks, members, plan.limit)[shard.rank :: shard.world]
        if not samples[domain] and shard.world == 1:
            raise MMNeuronError(f"domain {domain!r} has no documents")
    return PlannedSamples(tasks, samples)


def _start(
    out: Path,
    digest: str,
    shard: Shard,
    resume: bool,
    fresh: ActivationStats,
    planned: PlannedSamples,
) -> ActivationStats:
    """The stats to continue from: this shard's checkpoint when resuming, else zeros.

    Resuming is refused when a checkpoint of another run (settings, model, number of
    processes, or documents other than this run's first ones) lies beside ``out``; another
    shard of this run may have one while this one has none yet (it was stopped before its
    first save) and then starts from zero.
    """
    checkpoint = checkpoint_path(out, digest, shard)
    if not resume:
        return fresh
    if checkpoint.exists():
        saved = ActivationStats.load(checkpoint)
        problem = stats_mismatch(fresh, saved, "this run", "the checkpoint")
        if problem is None and saved.documents is not None:
            expected = planned.documents(saved.samples)
            differ = [d for d in saved.domains if saved.documents[d] != expected[d]]
            if differ:
                problem = f"it counted other documents of domain {differ[0]!r} than this run"
        if problem:
            raise MMNeuronError(f"cannot resume from {checkpoint}: {problem}")
        return saved
    this_run = {checkpoint_path(out, digest, Shard(r, shard.world)) for r in range(shard.world)}
    others = sorted(p for p in out.parent.glob(f"{out.name}.*.partial") if p not in this_run)
    if others:
        raise MMNeuronError(
            f"cannot resume: {others[0]} was recorded with other settings, model or "
            "number of processes"
        )
    return fresh


class Recording:
    """One record run: the plan, the loaded model and the shard this process takes.

    ``planned`` (:func:`plan_samples`, which needs no model) is computed here when not given.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        plan: RecordPlan,
        shard: Shard = Shard(),
        planned: PlannedSamples | None = None,
    ):
        self.loaded = loaded
        self.plan = plan
        self.shard = shard
        self.components = loaded.adapter.resolve(loaded.model)
        self.model_meta = model_identity(loaded, plan.pretrained)
        self.planned = planned or plan_samples(plan, shard)
        self.tasks = self.planned.tasks
        self.samples = self.planned.samples

    def empty_stats(self) -> ActivationStats:
        components = {c.name: c.info for c in self.components}
        unused = {c.name: list(c.unused_layers) for c in self.components if c.unused_layers}
        return ActivationStats.empty(
            list(self.plan.domains),
            components,
            self.model_meta,
            self.plan.token_scope,
            prompt=self.plan.prompt,
            unused=unused,
            documents={domain: {} for domain in self.plan.domains},
        )

    def run(
        self,
        out: Path,
        batch_size: int = 1,
        resume: bool = False,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> ActivationStats:
        """Record this shard; returns its stats (checkpointed to disk as it goes)."""
        digest = self.plan.digest(self.model_meta)
        checkpoint = checkpoint_path(out, digest, self.shard)
        stats = _start(out, digest, self.shard, resume, self.empty_stats(), self.planned)
        device = input_device(self.loaded.model)
        recorder = ActivationRecorder(self.components, len(stats.domains), device)
        last_save = time.monotonic()
        with recorder.hooks():
            for d, domain in enumerate(stats.domains):
                todo = self.samples[domain][stats.samples[domain] :]
                for start in range(0, len(todo), batch_size):
                    batch = todo[start : start + batch_size]
                    self._forward(recorder, d, batch)
                    stats.samples[domain] += len(batch)
                    if on_batch:
                        on_batch(domain, len(batch))
                    if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                        self._fold(recorder, stats).save(checkpoint)
                        last_save = time.monotonic()
                if todo:
                    self._fold(recorder, stats).save(checkpoint)
                    last_save = time.monotonic()
        return self._fold(recorder, stats)

    def _forward(self, recorder: ActivationRecorder, domain: int, batch: list[Sample]) -> None:
        adapter, model = self.loaded.adapter, self.loaded.model
        paper = self.plan.prompt == "paper"
        contents = [sample_content(self.tasks, s, bare=paper) for s in batch]
        inputs = adapter.build_inputs(
            self.loaded.processor, [c[0] for c in contents], [c[1] for c in contents], paper
        )
        inputs = inputs.to(input_device(model)).to(model.dtype)
        recorder.set_batch(domain, adapter.positions(model, inputs, self.plan.token_scope))
        with torch.inference_mode():
            model(**adapter.forward_kwargs(inputs))

    def _fold(self, recorder: ActivationRecorder, stats: ActivationStats) -> ActivationStats:
        """``stats`` (counts before this run) plus what the recorder has counted since."""
        active, tokens, sums = recorder.active, recorder.tokens, recorder.sum
        return ActivationStats(
            prompt=stats.prompt,
            unused=stats.unused,
            documents=self.planned.documents(stats.samples),
            domains=stats.domains,
            components=stats.components,
            model=stats.model,
            token_scope=stats.token_scope,
            samples=dict(stats.samples),
            active={c: stats.active[c] + active[c] for c in stats.components},
            tokens={c: stats.tokens[c] + tokens[c] for c in stats.components},
            sum={c: stats.sum[c] + sums[c] for c in stats.components},
        )
