"""Files written by release 0.1.0 load, and today's code recomputes them exactly.

``tests/data/release-0.1.0/`` holds what the 0.1.0 commands wrote on the miniature model
shipped then (``record`` on two synthetic domains, ``select --top-rate 0.1``, ``neurons find``
and ``neurons edit``), and that model (``mini_llava_next``; the package now ships one retrained
to read hints as well). Each file is loaded with today's readers and compared with the same
command run again now on that model: the counts, the selection, the neurons and the edit are
identical. 0.1.0 fingerprinted the model with the folder it was loaded from (wherever that
checkout lived): ``same_model`` recognises such files all the same.
"""

from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.edit import WeightEdit
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.models.loading import load_model, same_model
from mmneuron_bench.selection.dape import dape_mask

RELEASE = Path(__file__).parent / "data" / "release-0.1.0"
MODEL = ["--pretrained", str(RELEASE / "mini_llava_next")]


def _cli(*args: str) -> None:
    result = CliRunner().invoke(build_cli(), list(args))
    assert result.exit_code == 0, result.output


def test_stats_are_recounted_exactly_and_select_the_same_mask(tmp_path):
    old = ActivationStats.load(RELEASE / "legacy.stats.safetensors")
    out = tmp_path / "now.stats.safetensors"
    _cli("record", *MODEL, "--domain", "common=mmneuron_synth_common_train",
         "--domain", "documents=mmneuron_synth_documents_train", "--limit", "6",
         "--batch-size", "3", "--out", str(out))  # fmt: skip
    new = ActivationStats.load(out)
    assert (new.domains, new.samples) == (old.domains, old.samples)
    # 0.1.0 fingerprinted the folder too (wherever this clone is): the same model all the same.
    model = load_model(MODEL[1]).model
    assert new.model["adapter"] == old.model["adapter"] and same_model(old.model, model)
    for c in old.components:
        assert torch.equal(new.active[c], old.active[c]) and torch.equal(
            new.tokens[c], old.tokens[c]
        )
        torch.testing.assert_close(new.sum[c], old.sum[c], rtol=1e-6, atol=1e-6)
    mask = NeuronMask.load(RELEASE / "legacy.mask.safetensors")
    again = dape_mask(old, top_rate=0.1, source=mask.source)
    assert again.params == mask.params and same_model(mask.model, model)
    assert all(torch.equal(again.masks[key], mask.masks[key]) for key in mask.masks)


def test_neurons_and_edit_are_found_and_computed_again_exactly(tmp_path):
    neurons = tmp_path / "neurons.mask.safetensors"
    _cli("neurons", "find", *MODEL, "--tasks", "mmneuron_synth_common_eval", "--limit", "12",
         "--top-k", "4", "--max-new-tokens", "3", "--out", str(neurons))  # fmt: skip
    old, new = (NeuronMask.load(p) for p in (RELEASE / "legacy-neurons.mask.safetensors", neurons))
    assert (new.domains, new.params) == (old.domains, old.params)
    model = load_model(MODEL[1]).model
    assert same_model(old.model, model) and same_model(new.model, model)
    assert all(torch.equal(new.masks[key], old.masks[key]) for key in old.masks)

    edit = tmp_path / "now.edit.safetensors"
    _cli("neurons", "edit", *MODEL, "--neurons", str(RELEASE / "legacy-neurons.mask.safetensors"),
         "--source", "red", "--target", "blue", "--strength", "4", "--out", str(edit))  # fmt: skip
    old_edit, new_edit = WeightEdit.load(RELEASE / "legacy.edit.safetensors"), WeightEdit.load(edit)
    assert new_edit.params == old_edit.params and same_model(old_edit.model, model)
    for a, b in zip(old_edit.edits, new_edit.edits, strict=True):
        assert a.module == b.module
        assert all(torch.equal(x, y) for x, y in ((a.columns, b.columns), (a.original, b.original),
                                                   (a.delta, b.delta)))  # fmt: skip


def test_files_of_0_1_0_are_recognised_before_the_model_loads():
    """Their fingerprints name the folder they were made in; the check before loading (on the
    model's skeleton) accepts them as it does on the loaded model."""
    from mmneuron_bench.cli.checks import model_skeleton
    from mmneuron_bench.cli.options import ModelChoice
    from mmneuron_bench.interventions.mask import check_mask_model

    choice = ModelChoice(None, str(RELEASE / "mini_llava_next"), "cpu", "auto")
    skeleton, components = model_skeleton(choice)
    mask = NeuronMask.load(RELEASE / "legacy.mask.safetensors")
    stats = ActivationStats.load(RELEASE / "legacy.stats.safetensors")
    assert stats.documents is None  # 0.1.0 did not record them
    assert check_mask_model(skeleton, components, mask, stats) == {}
    WeightEdit.load(RELEASE / "legacy.edit.safetensors").check_fingerprint(skeleton)


def test_the_fingerprint_does_not_depend_on_where_the_model_lies(tmp_path):
    import shutil

    from mmneuron_bench.models.loading import fingerprint, load_model, same_model

    shutil.copytree(RELEASE / "mini_llava_next", tmp_path / "elsewhere")
    here, there = (
        load_model(str(p)).model for p in (RELEASE / "mini_llava_next", tmp_path / "elsewhere")
    )
    assert fingerprint(here) == fingerprint(there)
    # Files of 0.1.0 hashed the path they loaded the model from; they still match this model.
    old = ActivationStats.load(RELEASE / "legacy.stats.safetensors").model
    assert old["fingerprint"] != fingerprint(there) and same_model(old, there)
    assert not same_model({**old, "name_or_path": "/some/other/place"}, there)
