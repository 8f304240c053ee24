"""The five paper-domain task folders load a tiny local copy of their schema and score it.

Each copy is a parquet file with the dataset's real columns (a real ``datasets.Image``
feature), reached through an override YAML that ``include:``s the shipped YAML, exactly as
docs/tasks.md tells users to do; lmms-eval loads it through its own TaskManager.
"""

from __future__ import annotations

import statistics
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from mmneuron_bench.domains.index import read_task_config
from mmneuron_bench.tasks import TASKS_DIR
from mmneuron_bench.testing import tiny_image

SHIPPED = {
    # task: (folder, domain, public dataset, split, metric)
    "mmneuron_common_vqav2": ("common", "common", "lmms-lab/VQAv2", "validation", "vqa_accuracy"),
    "mmneuron_medical_pmcvqa": (
        "medical",
        "medical",
        "mdwiratathya/PMC-VQA_small",
        "test",
        "accuracy",
    ),
    "mmneuron_driving_lingoqa": ("driving", "driving", "runoob1/lingoqa", "test", "exact_match"),
    "mmneuron_remote_rsvqa": ("remote", "remote", "dmarsili/RSVQA-LR-2k", "validation", "accuracy"),
    "mmneuron_documents_docvqa": (
        "documents",
        "documents",
        "lmms-lab/DocVQA",
        "validation",
        "anls",
    ),
}

VQA_ANSWERS = ["2"] * 4 + ["3"] * 2 + ["many"] * 4  # ten human answers of one VQAv2 question


def _vqav2_rows():
    from datasets import Features, Image, Value

    answer = {
        "answer": Value("string"),
        "answer_confidence": Value("string"),
        "answer_id": Value("int64"),
    }
    features = Features(
        {
            "question_type": Value("string"),
            "multiple_choice_answer": Value("string"),
            "answers": [answer],
            "image_id": Value("int64"),
            "answer_type": Value("string"),
            "question_id": Value("int64"),
            "question": Value("string"),
            "image": Image(),
        }
    )
    rows = {
        "question_type": ["how many", "what color is the"],
        "multiple_choice_answer": ["2", "red"],
        "answers": [
            [
                {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                for i, a in enumerate(VQA_ANSWERS)
            ],
            [{"answer": "Red.", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)],
        ],
        "image_id": [11, 12],
        "answer_type": ["number", "other"],
        "question_id": [110, 120],
        "question": ["How many dogs are there?", "What color is the bus?"],
        "image": [tiny_image(1), tiny_image(2)],
    }
    return rows, features


def _pmcvqa_rows():
    from datasets import Features, Image, Value

    names = [
        "caption",
        "question",
        "answer",
        "choice a",
        "choice b",
        "choice c",
        "choice d",
        "answer label",
    ]
    features = Features({"image": Image(), **{name: Value("string") for name in names}})
    rows = {
        "image": [tiny_image(3), tiny_image(4)],
        "caption": ["PET scan of the chest.", "Axial CT of the abdomen."],
        "question": ["What is the uptake pattern in the breast?", "Which organ is enlarged?"],
        "answer": ["Focal uptake pattern", "Liver"],
        "choice a": ["A:Diffuse uptake pattern", "A:Liver"],
        "choice b": ["B:Focal uptake pattern", "B:Spleen"],
        "choice c": ["C:No uptake pattern", "C:Kidney"],
        "choice d": ["D:Cannot determine from the information given", "D:Pancreas"],
        "answer label": ["B", "A"],
    }
    return rows, features


def _lingoqa_rows():
    from datasets import Features, Image, Value

    frames = {f"image_{k}": Image() for k in range(1, 6)}
    features = Features(
        {
            "question_id": Value("string"),
            "segment_id": Value("string"),
            "question": Value("string"),
            "answer": Value("string"),
            **frames,
        }
    )
    rows = {
        "question_id": ["q1", "q2"],
        "segment_id": ["s1", "s2"],
        "question": ["Is there a cyclist ahead?", "What is the speed limit?"],
        "answer": ["Yes, there is a cyclist ahead of us.", "The speed limit is 30 mph."],
        **{f"image_{k}": [tiny_image(10 + k), tiny_image(20 + k)] for k in range(1, 6)},
    }
    return rows, features


def _rsvqa_rows():
    from datasets import Features, Image, Value

    features = Features({"image": Image(), "question": Value("string"), "answer": Value("string")})
    rows = {
        "image": [tiny_image(5), tiny_image(6), tiny_image(7)],
        "question": [
            "Is there a road in the image?",
            "Is it a rural or an urban area?",
            "How many water areas are there?",
        ],
        "answer": ["yes", "rural", "2"],
    }
    return rows, features


def _docvqa_rows():
    from datasets import Features, Image, Sequence, Value

    features = Features(
        {
            "questionId": Value("string"),
            "question": Value("string"),
            "question_types": Sequence(Value("string")),
            "image": Image(),
            "docId": Value("int64"),
            "ucsf_document_id": Value("string"),
            "ucsf_document_page_no": Value("string"),
            "answers": Sequence(Value("string")),
            "data_split": Value("string"),
        }
    )
    rows = {
        "questionId": ["49153", "24581"],
        "question": ["What is the date of the letter?", "Who signed the memo?"],
        "question_types": [["handwritten"], ["layout"]],
        "image": [tiny_image(8), tiny_image(9)],
        "docId": [14465, 13103],
        "ucsf_document_id": ["xnbl0037", "pybv0228"],
        "ucsf_document_page_no": ["1", "81"],
        "answers": [["12 March 1975", "March 12, 1975"], ["T. F. Riehl"]],
        "data_split": ["val", "val"],
    }
    return rows, features


ROWS = {
    "mmneuron_common_vqav2": _vqav2_rows,
    "mmneuron_medical_pmcvqa": _pmcvqa_rows,
    "mmneuron_driving_lingoqa": _lingoqa_rows,
    "mmneuron_remote_rsvqa": _rsvqa_rows,
    "mmneuron_documents_docvqa": _docvqa_rows,
}


def _override_yaml(task: str, data: str) -> str:
    """An include-path YAML that points the shipped task at a local parquet file."""
    folder, _, _, split, _ = SHIPPED[task]
    shipped = TASKS_DIR / folder / f"{task}.yaml"
    return textwrap.dedent(
        f"""\
        include: {shipped}
        task: {task}_local
        dataset_path: parquet
        dataset_name: null
        dataset_kwargs:
          data_files:
            {split}: {data}
        """
    )


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory):
    """All five tasks loaded by lmms-eval from tiny local parquet copies."""
    from datasets import Dataset

    root = tmp_path_factory.mktemp("include")
    rows = {}
    for task, build in ROWS.items():
        data, features = build()
        rows[task] = data
        Dataset.from_dict(data, features=features).to_parquet(str(root / f"{task}.parquet"))
        (root / f"{task}_local.yaml").write_text(_override_yaml(task, f"{task}.parquet"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets_cache")))
        from lmms_eval.tasks import TaskManager

        manager = TaskManager(include_path=[str(root)], include_defaults=False)
        names = [f"{task}_local" for task in ROWS]
        loaded = manager.load_task_or_group(names)
        yield {task: (loaded[f"{task}_local"], rows[task]) for task in ROWS}


def score(task, doc, reply: str) -> dict:
    return task.process_results(doc, [reply])


def aggregate(task, metric: str, values: list) -> float:
    return task.aggregation()[metric](values)


def vqa_accuracy(answers: list[str], reply: str) -> float:
    """Standard VQA accuracy: mean over the 10 humans of min(1, others who gave reply / 3)."""
    per_human = []
    for i in range(len(answers)):
        others = answers[:i] + answers[i + 1 :]
        per_human.append(min(1.0, others.count(reply) / 3))
    return statistics.mean(per_human)


def levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_shipped_yaml_points_at_its_public_dataset_and_names_its_domain():
    for task, (folder, domain, dataset, split, metric) in SHIPPED.items():
        config = read_task_config(TASKS_DIR / folder / f"{task}.yaml")
        assert config["task"] == task
        assert config["dataset_path"] == dataset
        assert config["test_split"] == split
        assert config["metadata"]["domain"] == domain
        assert domain in task.split("_"), "domain must be a '_'-separated token of the name"
        assert metric in [m["metric"] for m in config["metric_list"]]
        assert (TASKS_DIR / folder / "utils.py").is_file()
        # Every YAML tells users how to point it at a local copy.
        text = (TASKS_DIR / folder / f"{task}.yaml").read_text()
        assert "data_files" in text and "load_from_disk" in text


def test_no_task_name_is_taken_by_lmms_eval():
    # lmms-eval silently ignores an include-path task named like one of its own.
    import lmms_eval

    shipped_dir = Path(lmms_eval.__file__).parent / "tasks"
    texts = [p.read_text(errors="replace") for p in shipped_dir.rglob("*.yaml")]
    assert len(texts) > 300
    for task in SHIPPED:
        assert not any(task in text for text in texts), task


@pytest.mark.parametrize("task_name", list(SHIPPED))
def test_task_builds_image_and_prompt_from_local_copy(local_tasks, task_name):
    task, rows = local_tasks[task_name]
    docs = list(task.eval_docs)
    assert len(docs) == len(rows["question"])
    for doc, question in zip(docs, rows["question"], strict=True):
        [image] = task.doc_to_visual(doc)
        assert image.mode == "RGB" and image.size == tiny_image(0).size
        text = task.doc_to_text(doc)
        assert question in text


def test_vqav2_scores_with_lmms_eval_vqa_accuracy(local_tasks):
    task, _ = local_tasks["mmneuron_common_vqav2"]
    doc = task.eval_docs[0]
    assert task.doc_to_text(doc).endswith("\nAnswer the question using a single word or phrase.")
    perfect, number_word, partial, wrong = (
        score(task, doc, reply)["vqa_accuracy"] for reply in ("2", "Two.", "3", "cat")
    )
    assert perfect == number_word == vqa_accuracy(VQA_ANSWERS, "2") == 1.0
    assert partial == pytest.approx(vqa_accuracy(VQA_ANSWERS, "3")) == pytest.approx(0.6)
    assert wrong == 0.0
    # Human answers are normalised too, on a copy: lmms-eval's scorer edits them in place.
    red = task.eval_docs[1]
    assert score(task, red, "red")["vqa_accuracy"] == 1.0
    assert red["answers"][0]["answer"] == "Red."
    # A copy of the data without answer_id: each human is still left out on their own.
    bare = {"question_id": 1, "answers": [{"answer": a} for a in VQA_ANSWERS]}
    assert score(task, bare, "3")["vqa_accuracy"] == pytest.approx(0.6)
    assert aggregate(task, "vqa_accuracy", [perfect, partial, wrong]) == pytest.approx(1.6 / 3)


def test_pmcvqa_scores_the_option_letter(local_tasks):
    task, _ = local_tasks["mmneuron_medical_pmcvqa"]
    doc = task.eval_docs[0]
    assert task.doc_to_text(doc) == (
        "What is the uptake pattern in the breast?\n"
        "A. Diffuse uptake pattern\nB. Focal uptake pattern\nC. No uptake pattern\n"
        "D. Cannot determine from the information given\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert task.doc_to_target(doc) == "B"
    assert score(task, doc, "B")["accuracy"] == 1.0
    assert score(task, doc, "(B) Focal uptake pattern")["accuracy"] == 1.0
    assert score(task, doc, "A")["accuracy"] == 0.0
    assert score(task, doc, "")["accuracy"] == 0.0  # no letter: wrong, never a random guess
    assert score(task, task.eval_docs[1], "A.")["accuracy"] == 1.0
    assert aggregate(task, "accuracy", [1.0, 0.0, 0.0, 1.0]) == 0.5


def test_pmcvqa_reads_the_official_csv_column_names(local_tasks):
    task, _ = local_tasks["mmneuron_medical_pmcvqa"]
    official = {
        "Figure_path": "PMC1064097_F1.jpg",
        "Question": "What is the uptake pattern in the breast?",
        "Answer": "Focal uptake pattern",
        "Choice A": "A:Diffuse uptake pattern",
        "Choice B": "B:Focal uptake pattern",
        "Choice C": "C:No uptake pattern",
        "Choice D": "D:Cannot determine from the information given",
        "Answer_label": "B",
        "image": tiny_image(3),
    }
    assert task.doc_to_text(official) == task.doc_to_text(task.eval_docs[0])
    assert score(task, official, "B")["accuracy"] == 1.0


def test_lingoqa_uses_the_last_frame_and_scores_exact_and_token_f1(local_tasks):
    task, rows = local_tasks["mmneuron_driving_lingoqa"]
    doc = task.eval_docs[0]
    [image] = task.doc_to_visual(doc)
    assert image.tobytes() == rows["image_5"][0].convert("RGB").tobytes()
    assert image.tobytes() != rows["image_1"][0].convert("RGB").tobytes()

    perfect = score(task, doc, "yes, there is a cyclist ahead of us")
    assert perfect == {"exact_match": 1.0, "token_f1": 1.0}
    wrong = score(task, doc, "No.")
    assert wrong == {"exact_match": 0.0, "token_f1": 0.0}
    partial = score(task, doc, "There is a cyclist.")
    # Normalised (EvalAI: lower case, no punctuation, no articles) by hand:
    reply, reference = "there is cyclist".split(), "yes there is cyclist ahead of us".split()
    common = sum((Counter(reply) & Counter(reference)).values())
    precision, recall = common / len(reply), common / len(reference)
    assert partial["exact_match"] == 0.0
    assert partial["token_f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert aggregate(task, "token_f1", [1.0, 0.0]) == 0.5


def test_rsvqa_scores_exact_match_after_normalisation(local_tasks):
    task, _ = local_tasks["mmneuron_remote_rsvqa"]
    docs = task.eval_docs
    assert score(task, docs[0], "Yes.")["accuracy"] == 1.0
    assert score(task, docs[0], "no")["accuracy"] == 0.0
    assert score(task, docs[1], "Rural")["accuracy"] == 1.0
    assert score(task, docs[2], "two")["accuracy"] == 1.0
    assert score(task, docs[2], "3")["accuracy"] == 0.0
    assert aggregate(task, "accuracy", [1.0, 1.0, 0.0]) == pytest.approx(2 / 3)


def test_docvqa_scores_with_lmms_eval_anls(local_tasks):
    task, _ = local_tasks["mmneuron_documents_docvqa"]
    doc = task.eval_docs[0]
    assert score(task, doc, "12 march 1975")["anls"] == 1.0
    assert score(task, doc, "March 12, 1975")["anls"] == 1.0
    assert score(task, doc, "Riehl")["anls"] == 0.0
    partial = score(task, doc, "12 March 1976")["anls"]
    # ANLS by hand: 1 - distance / longer length, against the closest accepted answer.
    expected = 1 - levenshtein("12 march 1976", "12 march 1975") / len("12 March 1975")
    assert partial == pytest.approx(expected) == pytest.approx(12 / 13)
    assert score(task, doc, "1975")["anls"] == 0.0  # similarity below 0.5 counts as 0
    assert aggregate(task, "anls", [1.0, partial]) == pytest.approx((1 + 12 / 13) / 2)


def test_task_loads_a_local_copy_saved_with_save_to_disk(tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict
    from lmms_eval.tasks import TaskManager

    data, features = _rsvqa_rows()
    saved = tmp_path / "rsvqa_dict"
    DatasetDict({"validation": Dataset.from_dict(data, features=features)}).save_to_disk(saved)
    include = tmp_path / "include"
    include.mkdir()
    (include / "rsvqa_disk.yaml").write_text(
        textwrap.dedent(
            f"""\
            include: {TASKS_DIR / "remote" / "mmneuron_remote_rsvqa.yaml"}
            task: mmneuron_remote_rsvqa_disk
            dataset_path: {saved}
            dataset_kwargs:
              load_from_disk: true
            """
        )
    )
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "cache"))
    manager = TaskManager(include_path=[str(include)], include_defaults=False)
    task = manager.load_task_or_group(["mmneuron_remote_rsvqa_disk"])["mmneuron_remote_rsvqa_disk"]
    docs = list(task.eval_docs)
    assert [d["question"] for d in docs] == data["question"]
    assert task.config.metadata["domain"] == "remote"
    assert score(task, docs[1], "rural.")["accuracy"] == 1.0
