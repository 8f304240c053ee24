"""On a CUDA GPU: counts equal the CPU's, an empty mask leaves the outputs bit-identical, and a
model dispatched with part of it offloaded to the CPU counts as one on the GPU. Skipped without
CUDA; `bash benchmarks/gpu_check.sh` runs them on the GPU machine."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.models.hookcheck import example_inputs
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.models.placement import Placement
from mmneuron_bench.selection.random import random_mask
from mmneuron_bench.testing import write_tiny_task

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_tasks")
    write_tiny_task(root, "gpu_a", n_docs=4, seed=3)
    write_tiny_task(root, "gpu_b", n_docs=3, seed=4)
    return root


def _record(checkpoint, task_dir, out, *device) -> ActivationStats:
    result = CliRunner().invoke(
        build_cli(),
        [
            "record", "--pretrained", str(checkpoint), "--include-path", str(task_dir),
            "--domain", "a=gpu_a", "--domain", "b=gpu_b", "--batch-size", "3",
            "--out", str(out), *device,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return ActivationStats.load(out)


def test_counts_on_the_gpu_equal_the_cpu_counts(tiny_llava_next, task_dir, tmp_path):
    cpu = _record(tiny_llava_next, task_dir, tmp_path / "cpu.stats.safetensors")
    gpu = _record(tiny_llava_next, task_dir, tmp_path / "gpu.stats.safetensors", "--device", "cuda")
    offloaded = _record(
        tiny_llava_next, task_dir, tmp_path / "auto.stats.safetensors",
        "--device", "auto", "--max-memory", "0=120KB,cpu=1GiB",
    )  # fmt: skip
    for name in cpu.components:
        for stats in (gpu, offloaded):
            assert torch.equal(stats.active[name], cpu.active[name]), name
            assert torch.equal(stats.tokens[name], cpu.tokens[name]), name
            torch.testing.assert_close(stats.sum[name], cpu.sum[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_empty_mask_is_bit_identical_on_the_gpu(tiny_llava_next, dtype):
    loaded = load_model(str(tiny_llava_next), dtype=dtype, device="cuda")
    components = loaded.adapter.resolve(loaded.model)
    infos = {c.name: c.info for c in components}
    some = random_mask(infos, 0.2, seed=0)
    none = {key: torch.zeros_like(selected) for key, selected in some.masks.items()}
    empty = NeuronMask(some.domains, infos, {}, "random", {}, None, none)
    inputs = example_inputs(loaded, 2).to(dtype)
    forward = loaded.adapter.forward_kwargs(inputs)
    with torch.inference_mode():
        plain = loaded.model(**forward).logits
        with Deactivation(components, empty):
            same = loaded.model(**forward).logits
        with Deactivation(components, some):
            moved = loaded.model(**forward).logits
    assert torch.equal(same, plain)
    assert not torch.equal(moved, plain)


def test_a_mask_on_a_dispatched_model_switches_off_what_it_does_on_one_device(tiny_llava_next):
    whole = load_model(str(tiny_llava_next), device="cuda")
    split = load_model(str(tiny_llava_next), device=Placement("auto", {0: 120_000, "cpu": 2**30}))
    assert set(split.model.hf_device_map.values()) >= {0, "cpu"}
    mask = random_mask({c.name: c.info for c in whole.adapter.resolve(whole.model)}, 0.2, seed=1)
    logits = []
    for loaded in (whole, split):
        inputs = example_inputs(loaded, 2)
        with torch.inference_mode(), Deactivation(loaded.adapter.resolve(loaded.model), mask):
            logits.append(loaded.model(**loaded.adapter.forward_kwargs(inputs)).logits)
    torch.testing.assert_close(logits[1], logits[0])
