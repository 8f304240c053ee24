"""`mmneuron-bench tasks`: shipped and include-path tasks, name clashes, one-line errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.index import index_tasks, read_task_config
from mmneuron_bench.tasks import TASKS_DIR
from mmneuron_bench.testing import write_tiny_task

PAPER_TASKS = {
    "mmneuron_common_vqav2": ("common", "lmms-lab/VQAv2", ["vqa_accuracy"]),
    "mmneuron_medical_pmcvqa": ("medical", "mdwiratathya/PMC-VQA_small", ["accuracy"]),
    "mmneuron_driving_lingoqa": ("driving", "runoob1/lingoqa", ["exact_match", "token_f1"]),
    "mmneuron_remote_rsvqa": ("remote", "dmarsili/RSVQA-LR-2k", ["accuracy"]),
    "mmneuron_documents_docvqa": ("documents", "lmms-lab/DocVQA", ["anls"]),
}


def run(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), ["tasks", *map(str, args)])


def test_lists_the_five_paper_domains_as_json():
    result = run("--json")
    assert result.exit_code == 0, result.output
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    for name, (domain, dataset, metrics) in PAPER_TASKS.items():
        entry = listed[name]
        assert (entry["domain"], entry["dataset_path"], entry["metrics"]) == (
            domain,
            dataset,
            metrics,
        )
        assert entry["source"] == "shipped"
        assert Path(entry["yaml"]) == TASKS_DIR / domain / f"{name}.yaml"
        assert entry["folder"] == str(TASKS_DIR / domain)
    assert listed["mmneuron_documents_docvqa"]["dataset_name"] == "DocVQA"
    assert result.stderr == ""  # no name clashes among the shipped tasks


def test_table_shows_tasks_with_their_datasets():
    result = run()
    assert result.exit_code == 0, result.output
    for name, (_, dataset, _) in PAPER_TASKS.items():
        assert name in result.stdout and dataset in result.stdout
    assert "lmms-lab/DocVQA/DocVQA (validation)" in result.stdout


def test_include_path_adds_a_users_task_folder(tmp_path):
    folder = write_tiny_task(tmp_path / "mine", "mmneuron_toy_shapes", n_docs=2)
    result = run("--include-path", tmp_path / "mine", "--json")
    assert result.exit_code == 0, result.output
    [entry] = [e for e in json.loads(result.stdout) if e["name"] == "mmneuron_toy_shapes"]
    assert entry["source"] == str(tmp_path / "mine")
    assert entry["folder"] == str(folder)
    assert entry["dataset_path"] == "parquet" and entry["split"] == "test"
    # lmms-eval resolves relative data_files against the YAML's folder; so does the listing.
    assert entry["data_files"] == {"test": str(folder / "data.parquet")}
    assert entry["domain"] is None and entry["metrics"] == ["exact_match"]

    table = run("--include-path", tmp_path / "mine")
    assert "mmneuron_toy_shapes" in table.stdout and "parquet: test=data.parquet" in table.stdout


def test_missing_include_path_is_a_one_line_error(tmp_path):
    result = run("--include-path", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert result.output == f"Error: include path '{tmp_path / 'nowhere'}' is not a directory\n"


def test_unreadable_task_file_is_a_one_line_error(tmp_path):
    (tmp_path / "broken.yaml").write_text("task: [unclosed\n")
    result = run("--include-path", tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot read task file {tmp_path / 'broken.yaml'}: ")
    assert result.output.count("\n") == 1


def test_warns_about_names_lmms_eval_would_ignore_or_that_clash(tmp_path):
    write_tiny_task(tmp_path, "vqav2_val", n_docs=1)  # the name of a task lmms-eval ships
    write_tiny_task(tmp_path, "mmneuron_common_vqav2", n_docs=1)  # the name of one of ours
    result = run("--include-path", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    names = [e["name"] for e in json.loads(result.stdout)]
    assert names.count("mmneuron_common_vqav2") == 2 and "vqav2_val" in names
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert "'mmneuron_common_vqav2' is defined 2 times" in result.stderr
    assert "'vqav2_val'" in result.stderr and "shipped with lmms-eval" in result.stderr


def test_read_task_config_merges_includes_like_lmms_eval(tmp_path):
    from lmms_eval.utils import load_yaml_config

    write_tiny_task(tmp_path, "tiny", n_docs=1)
    override = tmp_path / "override.yaml"
    override.write_text(
        textwrap.dedent(
            f"""\
            include: {TASKS_DIR / "documents" / "mmneuron_documents_docvqa.yaml"}
            task: mmneuron_documents_docvqa_local
            dataset_path: parquet
            dataset_name: null
            dataset_kwargs:
              data_files:
                validation: tiny/data.parquet
            """
        )
    )
    yamls = [e.yaml_path for e in index_tasks()] + [override, tmp_path / "tiny" / "tiny.yaml"]
    for path in yamls:
        ours, theirs = read_task_config(path), load_yaml_config(str(path), mode="simple")
        assert ours.keys() == theirs.keys(), path
        for key in ours:
            if not hasattr(theirs[key], "tag"):  # lmms-eval keeps !function as a YAML node
                assert ours[key] == theirs[key], (path, key)
    merged = read_task_config(override)
    assert merged["dataset_kwargs"]["data_files"] == {
        "validation": str(tmp_path / "tiny" / "data.parquet")
    }
    assert merged["metadata"]["domain"] == "documents" and merged["dataset_name"] is None
