"""Options shared by every command that loads a model: --model, --pretrained, --device, --dtype."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.cli_options import ModelChoice, task_names
from mmneuron_bench.errors import MMNeuronError

# Every command that loads a model, with the other options it requires.
MODEL_COMMANDS = {
    "record": ["record", "--domain", "a=t", "--out", "x.stats.safetensors"],
    "run": ["run", "--tasks", "t"],
    "bench": ["bench"],
    "analyze deviation": ["analyze", "deviation", "--tasks", "t", "--mask", "m"],
    "analyze logit-lens": ["analyze", "logit-lens", "--tasks", "t"],
    "neurons find": ["neurons", "find", "--tasks", "t", "--out", "n.mask.safetensors"],
    "neurons ablate": ["neurons", "ablate", "--neurons", "n"],
    "neurons edit": ["neurons", "edit", "--neurons", "n", "--source", "a", "--target", "b"],
}


def _cli(args: list[str]):
    return CliRunner().invoke(build_cli(), args)


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_an_unknown_dtype_is_refused_before_loading(command, tmp_path):
    args = [*MODEL_COMMANDS[command], "--pretrained", str(tmp_path), "--dtype", "float64"]
    result = _cli(args)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--dtype': 'float64' is not one of" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_every_model_command_lists_the_same_model_options(command):
    result = _cli([*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--model", "--pretrained", "--device", "--dtype", "[auto|float32|bfloat16|"):
        assert option in result.output


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)],
)
def test_the_chosen_dtype_is_the_loaded_weights_dtype(tiny_llava_next, dtype, expected):
    loaded = ModelChoice(None, str(tiny_llava_next), "cpu", dtype).load()
    assert {p.dtype for p in loaded.model.parameters()} == {expected}
    assert loaded.adapter.name == "llava_next"


def test_a_named_adapter_that_does_not_handle_the_model_is_refused(tiny_llava_next):
    with pytest.raises(MMNeuronError, match="adapter 'instructblip' does not handle"):
        ModelChoice("instructblip", str(tiny_llava_next), "cpu", "auto").load()


def test_task_names_are_split_deduplicated_and_ordered():
    assert task_names(["b,a", " c ", "a,,b"]) == ["b", "a", "c"]
    with pytest.raises(MMNeuronError, match="--tasks names no task"):
        task_names([" , "])
