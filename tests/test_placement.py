"""`--device auto`: the model dispatched by accelerate, here with a `--max-memory` that sends
most of it to disk offload, counts, answers and scores exactly as a plain load; and the
plumbing of several processes (shares of the work, their order, each one's GPUs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.distributed import Processes
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.models.placement import Placement, input_device, offloaded, parse_max_memory
from mmneuron_bench.testing import write_tiny_task

TASKS = ("off_common_shapes", "off_medical_scans")
# The tiny LLaVA-NeXT weighs about 250 KB: 100 KB of CPU memory sends the rest to the disk.
OFFLOAD = ("--device", "auto", "--max-memory", "cpu=100KB")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offload_tasks")
    for seed, name in enumerate(TASKS):
        write_tiny_task(root, name, n_docs=3, seed=seed + 7)
    return root


def cli(*args) -> str:
    result = CliRunner().invoke(build_cli(), [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_small_memory_really_offloads_to_disk(tiny_llava_next, tmp_path):
    loaded = load_model(
        str(tiny_llava_next), device=Placement("auto", {"cpu": 100_000}, str(tmp_path))
    )
    assert "disk" in loaded.model.hf_device_map.values()
    llm = loaded.model.model.language_model.layers[0].mlp.down_proj
    assert offloaded(llm) and llm.weight.device.type == "meta"
    assert input_device(loaded.model) == torch.device("cpu")


def test_recording_counts_what_a_plain_load_counts(tiny_llava_next, task_dir, tmp_path):
    common = [
        "record", "--pretrained", tiny_llava_next, "--include-path", task_dir,
        "--domain", f"common={TASKS[0]}", "--domain", f"medical={TASKS[1]}", "--batch-size", 2,
    ]  # fmt: skip
    cli(*common, "--out", tmp_path / "plain.stats.safetensors")
    cli(*common, "--out", tmp_path / "auto.stats.safetensors", *OFFLOAD,
        "--offload-folder", tmp_path / "offload")  # fmt: skip
    plain = ActivationStats.load(tmp_path / "plain.stats.safetensors")
    auto = ActivationStats.load(tmp_path / "auto.stats.safetensors")
    assert auto.samples == plain.samples == {"common": 3, "medical": 3}
    for name in plain.components:
        assert torch.equal(auto.active[name], plain.active[name]), name
        assert torch.equal(auto.tokens[name], plain.tokens[name]), name
        assert torch.equal(auto.sum[name], plain.sum[name]), name
    assert int(plain.tokens["llm"].sum()) > 0


def test_run_and_the_analyses_answer_as_a_plain_load(tiny_llava_next, task_dir, tmp_path):
    mask = tmp_path / "m.mask.safetensors"
    cli("record", "--pretrained", tiny_llava_next, "--include-path", task_dir,
        "--domain", f"common={TASKS[0]}", "--domain", f"medical={TASKS[1]}",
        "--out", tmp_path / "s.stats.safetensors")  # fmt: skip
    cli("select", tmp_path / "s.stats.safetensors", "--top-rate", "0.2", "--out", mask)
    data = ["--pretrained", tiny_llava_next, "--tasks", ",".join(TASKS), "--include-path", task_dir]
    for name, extra in (("plain", ()), ("auto", OFFLOAD)):
        out = tmp_path / name
        cli("run", *data, "--mask", mask, "--modules", "llm", "--output", out / "run", *extra)
        cli("analyze", "deviation", *data, "--mask", mask, "--seeds", 1, "--output", out, *extra)
        cli("analyze", "logit-lens", *data, "--mask", mask, "--output", out, *extra)
    for name in ("deviation.json", "logit_lens.json", *(f"run/samples_{t}.jsonl" for t in TASKS)):
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    settings = json.loads((tmp_path / "auto" / "run" / "provenance.json").read_text())["settings"]
    assert settings["device"] == "auto" and settings["max_memory"] == {"cpu": 100_000}


def test_neurons_are_scored_from_offloaded_weights(tiny_llava_next, task_dir, tmp_path):
    find = [
        "neurons", "find", "--pretrained", tiny_llava_next, "--tasks", TASKS[0],
        "--include-path", task_dir, "--max-new-tokens", 3, "--top-k", 3,
    ]  # fmt: skip
    cli(*find, "--out", tmp_path / "plain.mask.safetensors")
    cli(*find, "--out", tmp_path / "auto.mask.safetensors", *OFFLOAD)
    plain, auto = (json.loads((tmp_path / f"{n}.mask.json").read_text()) for n in ("plain", "auto"))
    assert auto["tokens"] == plain["tokens"] and auto["tokens"]
    # A weight edit would write into offloaded weights: refused in one line.
    result = CliRunner().invoke(build_cli(), [
        "neurons", "ablate", "--pretrained", str(tiny_llava_next), "--neurons",
        str(tmp_path / "plain.mask.safetensors"), "--method", "noise", "--sigma", "0.1", *OFFLOAD,
    ])  # fmt: skip
    assert result.exit_code == 1
    assert "is offloaded (--device auto): a weight edit needs its weights" in result.output


def test_a_base_that_cannot_run_a_dispatched_model_is_refused(tiny_instructblip, tmp_path):
    result = CliRunner().invoke(build_cli(), [
        "run", "--pretrained", str(tiny_instructblip), "--tasks", "mmneuron_common_vqav2",
        "--output", str(tmp_path / "out"), *OFFLOAD,
    ])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "lmms-eval model 'instructblip' takes no device_map" in result.output
    assert not (tmp_path / "out").exists()


def test_max_memory_is_parsed_or_refused_in_one_line(tiny_llava_next):
    assert parse_max_memory("0=2GiB, cpu=1000") == {0: 2 * 2**30, "cpu": 1000}
    assert parse_max_memory("0:1MiB;disk:5GB") == {0: 2**20, "disk": 5 * 10**9}
    for text, message in (
        ("gpu=2GiB", "the device is a GPU index, cpu, disk or mps"),
        ("0=lots", "'lots' is not a size"),
        ("cpu", "is not of the form DEVICE=SIZE"),
    ):
        with pytest.raises(MMNeuronError, match=message):
            parse_max_memory(text)
    result = CliRunner().invoke(
        build_cli(), ["bench", "--pretrained", str(tiny_llava_next), "--max-memory", "cpu=1GiB"]
    )
    assert result.exit_code == 2 and "--max-memory needs --device auto" in result.output


def test_each_process_takes_its_share_and_gets_everything_back_in_order():
    items = list(range(7))
    shares = [Processes(rank, 3).take(items) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]

    class Gathering(Processes):
        def all_gather(self, value):
            return [[f"r{r}:{i}" for i in share] for r, share in enumerate(shares)]

    assert Gathering(1, 3).in_order([]) == [f"r{i % 3}:{i}" for i in items]


def test_each_process_dispatches_over_its_own_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    given = Placement("auto", {i: 10 for i in range(8)} | {"cpu": 99}, "off")
    mine = given.for_process(Processes(rank=5, world=8, local_rank=1, local_world=4))
    assert mine.max_memory == {"cpu": 99, 2: 10, 3: 10}
    assert mine.offload_folder == str(Path("off") / "rank5")
    assert mine.main_device() == "cuda:2"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda gpu: (100 + gpu, 200))
    free = Placement("auto").for_process(Processes(rank=3, world=4, local_rank=3, local_world=4))
    assert [k for k in free.max_memory] == [6, 7, "cpu"] and free.max_memory[7] == 107
    assert Placement("cuda").for_process(Processes(1, 2, 1, 2)).device == "cuda:1"
    with pytest.raises(MMNeuronError, match="each process needs at least one"):
        given.for_process(Processes(0, 16, 0, 16))
