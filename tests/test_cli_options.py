"""Options shared by every command that loads a model: --model, --pretrained, --device, --dtype."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.cli.options import (
    ModelChoice,
    check_output_files,
    check_output_folder,
    task_names,
)
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.atomic import atomic_write

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


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
@pytest.mark.parametrize(
    ("device", "message"),
    [("bogus", "'bogus' is not a torch device"), ("cuda:99", "'cuda:99': ")],
)
def test_a_device_this_machine_lacks_is_refused_before_loading(command, device, message, tmp_path):
    args = [*MODEL_COMMANDS[command], "--pretrained", str(tmp_path), "--device", device]
    result = _cli(args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--device': {message}" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["select", "s.stats.safetensors", "--out", "m.mask.safetensors", "--top-rate", "nan"],
        ["select", "s.stats.safetensors", "--out", "m.mask.safetensors", "--bar-ratio", "nan"],
        ["neurons", "edit", "--pretrained", "p", "--neurons", "n", "--source", "a",
         "--target", "b", "--out", "e.edit.safetensors", "--strength", "inf"],
    ],
)  # fmt: skip
def test_nan_and_infinity_are_refused_as_numbers(args):
    result = _cli(args)
    assert result.exit_code == 2, result.output
    assert "is not a finite number" in result.output


def test_model_options_of_adapters_need_a_model():
    for option in ("--check", "--model=llava"):
        result = _cli(["adapters", option])
        assert result.exit_code == 2, result.output
        assert f"{option.split('=')[0]} needs --pretrained" in result.output


def test_output_files_are_checked_before_any_work(tmp_path):
    check_output_files(tmp_path / "a.json", None, tmp_path / "b.json")
    for paths, message in (
        ((tmp_path / "a.json", tmp_path / "." / "a.json"), "a.json: given for two outputs"),
        ((tmp_path,), "is a folder, not a file"),
        ((tmp_path / "missing" / "a.json",), "cannot write (no folder"),
    ):
        with pytest.raises(MMNeuronError, match=re.escape(message)):
            check_output_files(*paths)


def test_an_output_folder_is_checked_but_not_created(tmp_path):
    check_output_folder(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(MMNeuronError, match="output path is a file"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(MMNeuronError, match="is not a writable folder"):
        check_output_folder(tmp_path / "file" / "under")


def test_an_unwritable_target_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MMNeuronError, match=r"cannot write \(Not a directory\)"):
        atomic_write(tmp_path / "file" / "out.json", lambda tmp: tmp.write_text("{}"))
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
