"""Bad input on tiny real models: refused in one line, before any weight loads, with every input
byte-identical afterwards and no output of the failing command left behind.

One test (or parametrised family) per class of defect: files of another model, outputs that
are inputs, overlapping recordings, empty domains and tasks, broken model folders, task tags
and groups, out-of-range options and leftovers, checks that came too late, misleading
messages and path spellings, a plain run into a grid's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import PreTrainedModel

from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import expand_task_names, task_manager
from mmneuron_bench.errors import MaskMismatchError, MMNeuronError
from mmneuron_bench.formats.edit import ColumnEdit, WeightEdit
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.models.identity import identity_of
from mmneuron_bench.testing import write_tiny_task

COMMON, MEDICAL = "bi_common_shapes", "bi_medical_scans"
TAG = "bi_all"  # both tasks
SEED_MAX = 2**32 - 1


def cli(*args) -> object:
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), [str(a) for a in args])


def line(template: str, **values) -> list[str]:
    """A command line from a template whose words may name ``values``: ``"select {stats}"``."""
    return [word.format(**values) for word in template.split()]


def refused(result, *fragments, code: int = 1) -> str:
    """A one-line error (no traceback) with exit status ``code``; returns the line."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    for fragment in fragments:
        assert str(fragment) in line, line
    return line


def contents(*paths: Path) -> dict[Path, bytes]:
    """Every file under ``paths`` with its bytes (to compare before and after a command)."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f: f.read_bytes() for f in files if f.is_file()}


@pytest.fixture
def no_weights(monkeypatch):
    """Any model weights loaded during the test fail it: checks must come first."""

    def refuse(cls, *args, **kwargs):
        raise AssertionError(f"{cls.__name__} weights were loaded")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    """Two 2-document tasks tagged ``bi_all``, a group of them, a group defining a task inline,
    a task without documents, one whose data file is missing, one whose scorer fails."""
    root = tmp_path_factory.mktemp("bad_input_tasks")
    for seed, name in enumerate((COMMON, MEDICAL, "bi_empty", "bi_missing", "bi_broken")):
        folder = write_tiny_task(root, name, n_docs=2, seed=seed)
        with open(folder / f"{name}.yaml", "a") as yaml:
            yaml.write(f"tag: {TAG}\n" if name in (COMMON, MEDICAL) else "")
    with open(root / "bi_empty" / "utils.py", "a") as utils:
        utils.write("\n\ndef drop_all(dataset):\n    return dataset.select([])\n")
    with open(root / "bi_empty" / "bi_empty.yaml", "a") as yaml:
        yaml.write("process_docs: !function utils.drop_all\n")
    (root / "bi_missing" / "data.parquet").unlink()
    with open(root / "bi_broken" / "utils.py", "a") as utils:
        utils.write("\n\ndef process_results(doc, results):\n    raise ValueError('broken')\n")
    (root / "groups").mkdir()
    (root / "groups" / "bi_group.yaml").write_text(f"group: bi_group\ntask:\n  - {TAG}\n")
    (root / "groups" / "bi_inline.yaml").write_text(
        textwrap.dedent(
            f"""\
            group: bi_inline
            task:
              - task: {COMMON}
                generation_kwargs:
                  max_new_tokens: 1
            """
        )
    )
    return root


@pytest.fixture(scope="module")
def other(tiny_llava_next, tmp_path_factory) -> Path:
    """A copy of the tiny LLaVA-NeXT with another config but the same shapes (and weights):
    another model by its fingerprint."""
    folder = tmp_path_factory.mktemp("other") / "model"
    shutil.copytree(tiny_llava_next, folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["rms_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def files(tiny_llava_next, tasks, tmp_path_factory) -> dict[str, Path]:
    """Stats recorded on the tiny model (2 documents of each task), a stats file of the first
    document of each, the DAPE mask, and a neurons file (token 'red', 3 llm neurons a layer)."""
    root = tmp_path_factory.mktemp("bad_input_files")
    out = {k: root / f"{k}.safetensors" for k in ("stats", "first", "mask", "neurons")}
    record = "record --pretrained {model} --include-path {tasks} --domain common={common} "
    record += "--domain medical={medical} --limit {limit} --out {out}"
    for name, limit in (("stats", 2), ("first", 1)):
        given = {"model": tiny_llava_next, "tasks": tasks, "common": COMMON, "medical": MEDICAL}
        assert cli(*line(record, **given, limit=limit, out=out[name])).exit_code == 0
    result = cli("select", out["stats"], "--top-rate", "0.2", "--out", out["mask"])
    assert result.exit_code == 0, result.output
    mask = NeuronMask.load(out["mask"])
    masks = {("tok33_red", c): torch.zeros(i.layers, i.width, dtype=torch.bool)
             for c, i in mask.components.items()}  # fmt: skip
    masks[("tok33_red", "llm")][:, :3] = True
    tokens = {"tok33_red": {"id": 33, "piece": "red", "text": "red"}}
    params = {"tasks": [COMMON], "include_paths": [str(tasks)], "limit": 1, "prompt": None,
              "max_new_tokens": 2, "tokens": tokens}  # fmt: skip
    neurons = NeuronMask(["tok33_red"], mask.components, mask.model, "contribution", params,
                         None, masks)  # fmt: skip
    neurons.save(out["neurons"])
    return out


@pytest.fixture(scope="module")
def values(files, tasks, tiny_llava_next) -> dict[str, str]:
    """The paths command-line templates name: the files, {model}, {tasks}."""
    return {**{k: str(v) for k, v in files.items()}, "model": str(tiny_llava_next),
            "tasks": str(tasks)}  # fmt: skip


# --- 1. Files of another model


# Every command that applies a stats, mask or neurons file to a model.
APPLYING = {
    "run": "run --mask {mask} {task} --output {out}",
    "run mean": "run --mask {mask} --mode mean --stats {stats} {task} --output {out}",
    "run --grid": "run --grid --mask {mask} {task} --output {out}",
    "analyze deviation": "analyze deviation --mask {mask} {task} --output {out}",
    "analyze logit-lens": "analyze logit-lens --mask {mask} {task} --output {out}",
    "neurons ablate": "neurons ablate --neurons {neurons} --out {out}.json",
    "neurons edit": "neurons edit --neurons {neurons} --source red --target blue --out {out}.edit",
}


def _applying(command: str, files, tasks, out: Path, model: Path) -> list[str]:
    task = f"--tasks {COMMON} --include-path {tasks} --limit 1"
    values = {k: str(v) for k, v in files.items()}
    args = line(APPLYING[command].replace("{task}", task), **values, out=out)
    return [*args, "--pretrained", str(model)]


@pytest.mark.parametrize("command", sorted(APPLYING))
def test_1_a_file_of_another_model_is_refused_naming_both(
    command, files, tasks, other, tiny_llava_next, tmp_path, no_weights
):
    before = contents(*files.values())
    args = _applying(command, files, tasks, tmp_path / "out", other)
    found = refused(cli(*args), "was made on another model", f"'{tiny_llava_next}'", f"'{other}'")
    assert "fingerprint" in found and "--allow-other-model" in found
    assert contents(*files.values()) == before
    assert list(tmp_path.iterdir()) == []


def test_1_a_model_changed_in_its_own_folder_is_said_so(files, tasks, tiny_llava_next, tmp_path):
    """The mask names the folder the model is in now: the message says the folder's model
    changed, not that two folders differ."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_llava_next, folder)
    mask = tmp_path / "m.mask.safetensors"
    replace(NeuronMask.load(files["mask"]), model=identity_of(str(folder))).save(mask)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["rms_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(config))
    args = _applying("run", {**files, "mask": mask}, tasks, tmp_path / "out", folder)
    found = refused(cli(*args), f"another model in the same place '{folder}'", "changed since")
    assert "--allow-other-model" in found and not (tmp_path / "out").exists()


def test_1_a_deliberate_transfer_is_applied_and_recorded(files, tasks, other, tmp_path):
    out = tmp_path / "out"
    result = cli(*_applying("run", files, tasks, out, other), "--allow-other-model")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "provenance.json").read_text())
    transfer = {"the mask": NeuronMask.load(files["mask"]).model}
    assert record["settings"]["allow_other_model"] is True
    assert record["settings"]["other_model"] == transfer
    assert record["mask"]["other_model"] == transfer


def test_1_the_lmms_eval_model_compares_too(files, other):
    from mmneuron_bench.lmms.model import MMNeuronLMM

    mask = str(files["mask"])
    with pytest.raises(MaskMismatchError, match="the mask was made on another model"):
        MMNeuronLMM(pretrained=str(other), device="cpu", mask=mask)
    lm = MMNeuronLMM(pretrained=str(other), device="cpu", mask=mask, allow_other_model=True)
    assert lm.describe()["mask"]["other_model"]["the mask"]["name_or_path"] != str(other)


# --- 2. An output that is an input

# {symlink}, {hardlink}: links to the stats file; {relative}: the mask by a relative path;
# {here}: a folder holding a copy of the mask named provenance.json and distribution.json.
OVERWRITES = {
    "select STATS --out STATS": "select {stats} --out {stats}",
    "select --out a symlink to STATS": "select {stats} --out {symlink}",
    "select --like MASK --out MASK, relative": "select --method random --like {mask} "
    "--out {relative}",
    "merge A B --out A": "merge {stats} {first} --out {stats}",
    "merge A B --out a hard link to A": "merge {stats} {first} --out {hardlink}",
    "neurons edit --out NEURONS": "neurons edit --pretrained {model} --neurons {neurons} "
    "--source red --target blue --out {neurons}",
    "record --out the model's weights": "record --pretrained {model} --domain a=bi_common_shapes "
    "--include-path {tasks} --out {model}/model.safetensors",
    "run --output over --mask": "run --pretrained {model} --tasks bi_common_shapes "
    "--include-path {tasks} --mask {here}/provenance.json --output {here}",
    "analyze distribution --output over MASK": "analyze distribution {here}/distribution.json "
    "--output {here}",
}


@pytest.mark.parametrize("case", sorted(OVERWRITES))
def test_2_an_output_that_is_an_input_is_refused(
    case, files, tasks, tiny_llava_next, tmp_path, no_weights
):
    (tmp_path / "symlink").symlink_to(files["stats"])
    os.link(files["stats"], tmp_path / "hardlink")
    for name in ("provenance.json", "distribution.json"):
        shutil.copy(files["mask"], tmp_path / name)
    values = {k: str(v) for k, v in files.items()}
    args = line(
        OVERWRITES[case],
        **values,
        model=tiny_llava_next,
        tasks=tasks,
        here=tmp_path,
        symlink=tmp_path / "symlink",
        hardlink=tmp_path / "hardlink",
        relative=os.path.relpath(files["mask"]),
    )
    before = contents(*files.values(), tiny_llava_next, tasks, tmp_path)
    refused(cli(*args), "is the input", "give another output")
    assert contents(*files.values(), tiny_llava_next, tasks, tmp_path) == before


# --- 3. Overlapping recordings


def test_3_merge_refuses_a_document_counted_twice(files, tmp_path):
    stats = ActivationStats.load(files["stats"])
    assert stats.documents == {"common": {COMMON: [0, 1]}, "medical": {MEDICAL: [0, 1]}}
    out = tmp_path / "all.stats.safetensors"
    before = contents(files["stats"], files["first"])
    refused(
        cli("merge", files["stats"], files["first"], "--out", out),
        f"domain 'common', task '{COMMON}': 1 document (0) counted in {files['stats']} too",
    )
    assert contents(files["stats"], files["first"]) == before and not out.exists()


def test_3_merge_warns_that_files_without_the_record_cannot_be_checked(files, tmp_path):
    first = replace(ActivationStats.load(files["first"]), documents=None)
    second = replace(first, samples={"common": 2, "medical": 2})
    for i, stats in enumerate((first, second)):
        stats.save(tmp_path / f"{i}.stats.safetensors")
    out = tmp_path / "all.stats.safetensors"
    result = cli(
        "merge", tmp_path / "0.stats.safetensors", tmp_path / "1.stats.safetensors", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "cannot check that none is counted twice" in result.output
    assert ActivationStats.load(out).documents is None


# --- 4. Empty domains, tasks without documents


def test_4_select_refuses_a_domain_that_saw_no_tokens(files, tmp_path):
    stats = ActivationStats.load(files["stats"])
    stats.tokens = {c: t.clone() for c, t in stats.tokens.items()}
    stats.active = {c: a.clone() for c, a in stats.active.items()}
    stats.tokens["llm"][1] = 0
    stats.active["llm"][1] = 0
    path, out = tmp_path / "x.stats.safetensors", tmp_path / "x.mask.safetensors"
    stats.save(path)
    refused(cli("select", path, "--out", out), "domain 'medical' saw no tokens in component 'llm'")
    assert not out.exists()


# Where a task is read: a command line around {task} (a task name) writing into {out}.
READING = {
    "run": "run --pretrained {model} --include-path {tasks} --tasks {task} --output {out}/out",
    "record": "record --pretrained {model} --include-path {tasks} --domain d={task} "
    "--out {out}/d.stats.safetensors",
}


@pytest.mark.parametrize("command", sorted(READING))
def test_4_a_task_without_documents_is_one_line(command, values, tmp_path, no_weights):
    result = cli(*line(READING[command], **values, task="bi_empty", out=tmp_path))
    refused(result, "task 'bi_empty'", "has no documents")
    assert list(tmp_path.iterdir()) == []


# --- 5. Broken model folders


def _damage(folder: Path, how: str) -> str:
    """Damage a model folder copy; returns the file the error must name."""
    weights = folder / "model.safetensors"
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return "model.safetensors"
    if how == "missing tokenizer":
        (folder / "tokenizer.json").unlink()
        return "tokenizer.json"
    if how == "missing processor config":
        (folder / "processor_config.json").unlink()
        return "processor_config.json"
    if how == "missing shard":
        shard = "model-00002-of-00002.safetensors"
        index = {"metadata": {}, "weight_map": {"lm_head.weight": shard}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        return shard
    # pickled weights torch will not unpickle safely (a NumPy array among the tensors)
    import numpy as np
    from safetensors.torch import load_file

    torch.save({**load_file(weights), "extra": np.zeros(2)}, folder / "pytorch_model.bin")
    weights.unlink()
    return "pytorch_model.bin"


DAMAGES = ("truncated weights", "missing tokenizer", "missing processor config", "missing shard",
           "pickle-only weights")  # fmt: skip


@pytest.fixture(scope="module")
def damaged(tiny_llava_next, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    for how in DAMAGES:
        folder = root / how.replace(" ", "_")
        shutil.copytree(tiny_llava_next, folder)
        out[how] = folder, _damage(folder, how)
    return out


# Our loader, lmms-eval's, and the tokenizer read before the weights.
LOADING = {
    **READING,
    "neurons edit": "neurons edit --pretrained {model} --neurons {neurons} --source red "
    "--target blue --out {out}/e.edit.safetensors",
}


@pytest.mark.parametrize("command", sorted(LOADING))
@pytest.mark.parametrize("how", DAMAGES)
def test_5_a_broken_model_folder_is_one_line_naming_folder_and_file(
    command, how, damaged, values, tmp_path
):
    folder, file = damaged[how]
    before = contents(folder)
    args = line(LOADING[command], **{**values, "model": folder}, task=COMMON, out=tmp_path)
    refused(cli(*args), folder, file)
    assert contents(folder) == before and list(tmp_path.iterdir()) == []


# --- 6. Tags and groups


def test_6_tags_and_groups_stand_for_their_tasks(tasks):
    manager = task_manager(["mmneuron_synth_train", "bi_group"], [str(tasks)])
    synth = ("common", "documents", "driving", "medical", "remote")
    expanded = expand_task_names(manager, ["mmneuron_synth_train"])
    assert expanded == [f"mmneuron_synth_{d}_train" for d in synth]
    assert expand_task_names(manager, ["bi_group", COMMON]) == [COMMON, MEDICAL]
    with pytest.raises(MMNeuronError, match="group 'bi_inline' defines a task inline"):
        expand_task_names(manager, ["bi_inline"])


def test_6_record_analyses_and_neurons_find_take_a_tag(values, tmp_path):
    given = "--pretrained {model} --include-path {tasks} --limit 1"
    out = tmp_path / "tag.stats.safetensors"
    result = cli(*line(f"record {given} --domain both={TAG} --out {{out}}", **values, out=out))
    assert result.exit_code == 0, result.output
    assert ActivationStats.load(out).documents == {"both": {COMMON: [0], MEDICAL: [0]}}
    deviation = f"analyze deviation {given} --tasks {TAG} --mask {{mask}} --seeds 1 --modules llm"
    result = cli(*line(f"{deviation} --output {{out}}", **values, out=tmp_path))
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "deviation.json").read_text())["rows"]
    assert {(r["task"], r["domain"]) for r in rows} == {(COMMON, "common"), (MEDICAL, "medical")}
    neurons = tmp_path / "n.mask.safetensors"
    find = f"neurons find {given} --tasks {TAG} --max-new-tokens 2 --top-k 2 --out {{out}}"
    result = cli(*line(find, **values, out=neurons))
    assert result.exit_code == 0, result.output
    scores = json.loads(neurons.with_suffix(".json").read_text())
    assert {g["task"] for g in scores["generations"]} == {COMMON, MEDICAL}


def test_6_a_group_defining_a_task_inline_is_refused(values, tmp_path, no_weights):
    result = cli(*line(READING["run"], **values, task="bi_inline", out=tmp_path))
    refused(result, "group 'bi_inline' defines a task inline")
    assert list(tmp_path.iterdir()) == []


# --- 7. Out-of-range numbers, leftovers of a failed command

OUT_OF_RANGE = {
    "run --seed": f"run --pretrained {{model}} --tasks {COMMON} --seed {SEED_MAX + 1}",
    "run --random-seeds": f"run --pretrained {{model}} --tasks {COMMON} --grid --mask {{mask}} "
    f"--baseline random --seed {SEED_MAX} --random-seeds 2",
    "select --seed": f"select --method random --like {{mask}} --seed {SEED_MAX + 1} --out x",
    "neurons ablate --seed": f"neurons ablate --pretrained {{model}} --neurons {{neurons}} "
    f"--seed {SEED_MAX + 1}",
    "analyze deviation --seeds": f"analyze deviation --pretrained {{model}} --tasks {COMMON} "
    f"--mask {{mask}} --seeds {SEED_MAX + 2}",
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_7_out_of_range_numbers_are_refused_before_loading(case, values, tmp_path, no_weights):
    args = line(OUT_OF_RANGE[case], **values)
    if args[0] in ("run", "analyze"):
        args += ["--include-path", values["tasks"], "--output", str(tmp_path / "out")]
    result = cli(*args)
    assert result.exit_code == 2, result.output  # a usage error
    assert "Traceback" not in result.output
    [error] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert str(SEED_MAX + 1) in error, error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("grid", ["", "--grid --modules none"], ids=["run", "run --grid"])
def test_7_a_failed_evaluation_leaves_no_output(grid, values, tmp_path):
    run = f"{READING['run']} --mask {{mask}} --domain all {grid}"
    result = cli(*line(run, **values, task="bi_broken", out=tmp_path))
    assert result.exit_code != 0  # the task's scorer raises
    assert list(tmp_path.iterdir()) == []  # no provenance.json alone, no samples without results


def test_7_run_outputs_appear_together_or_not_at_all(tmp_path, monkeypatch):
    from mmneuron_bench.lmms import evaluate

    def fail_on_provenance(path, value):
        if path.name == "provenance.json":
            raise MMNeuronError(f"{path}: cannot write (disk full)")
        evaluate.write_json(path, value)

    monkeypatch.setattr(evaluate, "write_results_json", fail_on_provenance)
    results = {"results": {"t": {}}, "samples": {"t": [{"doc_id": 0}]}}
    with pytest.raises(MMNeuronError, match="disk full"):
        evaluate.write_run(tmp_path, results, {})
    assert list(tmp_path.iterdir()) == []


EDIT = "neurons edit --pretrained {model} --neurons {neurons} --source {source} --target blue "
EDIT += "--out {out}/e.edit.safetensors"


def test_7_a_failed_edit_report_leaves_no_edit(values, tmp_path, monkeypatch):
    from mmneuron_bench.neurons import editing

    def fail(*args, **kwargs):
        raise MMNeuronError("measuring failed")

    monkeypatch.setattr(editing, "edit_effects", fail)
    report = f"{EDIT} --report {{out}}/e.json"
    refused(cli(*line(report, **values, source="red", out=tmp_path)), "measuring failed")
    assert list(tmp_path.iterdir()) == []


# --- 8. Checks that came too late


@pytest.fixture(scope="module")
def nan_edit(files) -> Path:
    """An edit of the tiny model whose delta is NaN."""
    edit = ColumnEdit("model.language_model.layers.0.mlp.down_proj", torch.tensor([0]),
                      torch.zeros(40, 1), torch.full((40, 1), float("nan")))  # fmt: skip
    path = files["mask"].parent / "nan.edit.safetensors"
    WeightEdit(NeuronMask.load(files["mask"]).model, {}, [edit]).save(path)
    return path


LATE = {
    "unknown task": (READING["record"], {"task": "bi_comon_shapes"},
                     "task 'bi_comon_shapes' not found"),
    "NaN in an edit": (READING["run"] + " --edit {edit}", {"task": COMMON},
                       "tensor '0.delta' has NaN or infinite values"),
    "unknown token": (EDIT, {"source": "green"},
                      "token 'green' is not among the neurons file's tokens"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LATE))
def test_8_names_and_files_are_checked_before_loading(case, values, nan_edit, tmp_path, no_weights):
    template, extra, message = LATE[case]
    refused(cli(*line(template, **values, **extra, edit=nan_edit, out=tmp_path)), message)
    assert list(tmp_path.iterdir()) == []


# --- 9. Misleading messages; paths compared by what they point to


@pytest.mark.parametrize("command", sorted(READING))
def test_9_a_missing_data_file_names_the_task_and_the_file(command, values, tmp_path, no_weights):
    result = cli(*line(READING[command], **values, task="bi_missing", out=tmp_path))
    data = Path(values["tasks"]) / "bi_missing" / "data.parquet"
    assert "RetryError" not in refused(result, "task 'bi_missing'", f"data file {data} does not")


def test_9_resume_recognises_the_model_by_another_path_spelling(tiny_llava_next, tasks, tmp_path):
    from mmneuron_bench.models.loading import load_model, model_identity
    from mmneuron_bench.recording.run import Recording, RecordPlan, Shard, checkpoint_path

    out = tmp_path / "x.stats.safetensors"
    plan = RecordPlan(str(tiny_llava_next), {"a": [COMMON]}, [str(tasks)], limit=2)
    loaded = load_model(str(tiny_llava_next))
    digest = plan.digest(model_identity(loaded, str(tiny_llava_next)))
    Recording(loaded, plan).empty_stats().save(checkpoint_path(out, digest, Shard()))
    (tmp_path / "link").symlink_to(tiny_llava_next)
    record = "record --pretrained {model} --domain a={task} --include-path {tasks} --limit 2"
    spelled = {"model": os.path.relpath(tmp_path / "link"), "tasks": tasks, "task": COMMON}
    result = cli(*line(f"{record} --out {{out}} --resume", **spelled, out=out))
    assert result.exit_code == 0, result.output  # another checkpoint beside --out is refused
    assert ActivationStats.load(out).samples == {"a": 2} and list(tmp_path.glob("*.partial")) == []


GRID = "run --grid --pretrained {model} --mask {mask} --tasks bi_all --include-path {tasks} "
GRID += "--limit 1 --modules none,llm --output {out}"


@pytest.fixture(scope="module")
def grid(values, tmp_path_factory) -> Path:
    """A grid over the tag's two tasks (module sets none and llm), the mask given by a
    relative path."""
    out = tmp_path_factory.mktemp("grid") / "grid"
    relative = os.path.relpath(values["mask"])
    result = cli(*line(GRID, **{**values, "mask": relative}, out=out))
    assert result.exit_code == 0, result.output
    return out


def test_6_9_a_grid_over_a_tag_resumes_with_the_mask_by_another_path(grid, values):
    data = json.loads((grid / "grid.json").read_text())
    assert list(data["tasks"]) == [COMMON, MEDICAL] and len(data["cells"]) == 4
    absolute = str(Path(values["mask"]).resolve())
    result = cli(*line(GRID, **{**values, "mask": absolute}, out=grid))
    assert result.exit_code == 0, result.output
    assert "resuming: 4 of 4 cells" in result.output
    assert json.loads((grid / "grid.json").read_text())["cells"] == data["cells"]


# --- 10. A plain run and a grid in one folder


def test_10_a_plain_run_into_a_grid_folder_is_refused(grid, values, no_weights):
    before = contents(grid)
    run = READING["run"].replace("{out}/out", "{out}") + " --mask {mask}"
    result = cli(*line(run, **values, task=COMMON, out=grid))
    refused(result, f"{grid} holds a grid (grid.json)", "give another --output")
    assert contents(grid) == before


def test_10_a_grid_into_a_plain_run_folder_is_refused(values, tmp_path, no_weights):
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "provenance.json").write_text("{}")
    before = contents(tmp_path)
    run = READING["run"].replace("{out}/out", "{out}") + " --mask {mask} --grid"
    refused(
        cli(*line(run, **values, task=COMMON, out=tmp_path)), "holds the results of a plain run"
    )
    assert contents(tmp_path) == before
