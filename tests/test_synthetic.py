"""Tests for mmneuron_bench.synthetic and tasks/synthetic: deterministic, balanced, distinct
domains, a cache generated on first use, and lmms-eval tasks that score answers exactly."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.synthetic.cache import CACHE_ENV, load_split, split_path
from mmneuron_bench.synthetic.generate import (
    DOMAINS,
    SPLIT_SIZES,
    chance_level,
    generate,
    question_and_answer,
    questions,
)
from mmneuron_bench.tasks import TASKS_DIR

SYNTHETIC_TASKS = TASKS_DIR / "synthetic"


def _digest(domain: str, split: str, index: int) -> str:
    sample = generate(domain, split, index)
    text = f"{sample.question}|{sample.answer}|".encode()
    return hashlib.sha256(text + sample.image.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A fresh cache for this module, so that first-use generation is what is tested."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root))
        yield root


def test_five_domains_with_the_agreed_names():
    assert list(DOMAINS) == ["common", "medical", "driving", "remote", "documents"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_generator_is_deterministic_across_processes(domain):
    indices = [0, 1, 2, 7, 100]
    here = [_digest(domain, "eval", i) for i in indices]
    assert here == [_digest(domain, "eval", i) for i in indices]
    # A fresh interpreter with another hash seed draws the same bytes.
    code = (
        "import hashlib\n"
        "from mmneuron_bench.synthetic.generate import generate\n"
        f"for i in {indices}:\n"
        f"    s = generate({domain!r}, 'eval', i)\n"
        "    text = f'{s.question}|{s.answer}|'.encode()\n"
        "    print(hashlib.sha256(text + s.image.tobytes()).hexdigest())\n"
    )
    env = {"PYTHONHASHSEED": "123"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == here


@pytest.mark.parametrize("domain", DOMAINS)
def test_images_are_32px_rgb_and_unique(domain):
    images = [generate(domain, "eval", i).image for i in range(30)]
    assert {(im.mode, im.size) for im in images} == {("RGB", (32, 32))}
    assert len({im.tobytes() for im in images}) == len(images)


@pytest.mark.parametrize("domain", DOMAINS)
def test_eval_samples_never_appear_in_train(domain):
    eval_set = {generate(domain, "eval", i).image.tobytes() for i in range(SPLIT_SIZES["eval"])}
    train = {generate(domain, "train", i).image.tobytes() for i in range(600)}
    assert not eval_set & train


@pytest.mark.parametrize("split", SPLIT_SIZES)
@pytest.mark.parametrize("domain", DOMAINS)
def test_answers_are_balanced_per_question(domain, split):
    """Every question type has one text and its answers equally often (within one)."""
    qs = questions(domain)
    counts = Counter(question_and_answer(domain, i) for i in range(SPLIT_SIZES[split]))
    per_type = Counter(t for t, _ in counts.elements())
    assert max(per_type.values()) - min(per_type.values()) <= 1
    for t, question in enumerate(qs):
        seen = [counts[(t, a)] for a in question.answers]
        assert max(seen) - min(seen) <= 1 and min(seen) > 0
        assert {a for (tt, a) in counts if tt == t} == set(question.answers)
    expected = sum(per_type[t] / len(qs[t].answers) for t in per_type) / SPLIT_SIZES[split]
    assert chance_level(domain, split) == pytest.approx(expected)


def test_every_answer_is_one_word():
    for domain in DOMAINS:
        for question in questions(domain):
            assert all(len(a.split()) == 1 for a in question.answers)


def _stats(image) -> np.ndarray:
    """Mean and spread of each channel, saturation, and top/bottom brightness."""
    x = np.asarray(image, dtype=np.float64) / 255
    saturation = x.max(axis=2) - x.min(axis=2)
    gray = x.mean(axis=2)
    return np.concatenate(
        [x.mean((0, 1)), x.std((0, 1)), [saturation.mean(), gray[:10].mean(), gray[-10:].mean()]]
    )


def test_domains_are_told_apart_by_simple_image_statistics():
    """A nearest-neighbour classifier on nine standardised image statistics, fitted on train
    images, names the domain of every held-out image."""
    train = np.array([_stats(generate(d, "train", i).image) for d in DOMAINS for i in range(100)])
    labels = [d for d in DOMAINS for _ in range(100)]
    scale = train.std(axis=0)
    for domain in DOMAINS:
        for i in range(100):
            distance = np.linalg.norm(
                (train - _stats(generate(domain, "eval", i).image)) / scale, axis=1
            )
            assert labels[int(np.argmin(distance))] == domain, (domain, i)


def test_unknown_domain_split_or_index_is_a_one_line_error():
    with pytest.raises(MMNeuronError, match="unknown synthetic domain 'space'"):
        generate("space", "eval", 0)
    with pytest.raises(MMNeuronError, match="unknown split 'test'"):
        generate("common", "test", 0)
    with pytest.raises(MMNeuronError, match="outside split 'eval'"):
        generate("common", "eval", SPLIT_SIZES["eval"])


def test_split_is_generated_on_first_use_then_read_from_cache(cache_dir):
    path = split_path("medical", "eval")
    assert str(path).startswith(str(cache_dir)) and not path.exists()
    data = load_split("medical", "eval")
    assert path.exists() and len(data) == SPLIT_SIZES["eval"]
    stamp = path.stat().st_mtime_ns
    again = load_split("medical", "eval")
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    for i in (0, 5, 359):
        sample = generate("medical", "eval", i)
        row = again[i]
        assert (row["index"], row["question"], row["answer"]) == (
            i,
            sample.question,
            sample.answer,
        )
        assert row["image"].convert("RGB").tobytes() == sample.image.tobytes()


def test_stale_cached_split_is_generated_again(cache_dir):
    """A cache written by an older generator (other answers, same VERSION) is not served."""
    from datasets import Dataset

    path = split_path("driving", "eval")
    fresh = load_split("driving", "eval")
    answers = list(fresh["answer"])
    stale = fresh.to_dict()
    stale["answer"] = ["wrong"] + answers[1:]
    pq.write_table(Dataset.from_dict(stale, features=fresh.features).data.table, path)
    assert pq.read_table(path).column("answer")[0].as_py() == "wrong"
    assert list(load_split("driving", "eval")["answer"]) == answers
    assert pq.read_table(path).column("answer")[0].as_py() == answers[0]


def _task_names() -> list[str]:
    return [f"mmneuron_synth_{d}_{s}" for d in DOMAINS for s in SPLIT_SIZES]


def test_task_folder_lists_every_sample_of_its_domain_and_split():
    for domain in DOMAINS:
        for split, size in SPLIT_SIZES.items():
            yaml = (SYNTHETIC_TASKS / f"mmneuron_synth_{domain}_{split}.yaml").read_text()
            assert f"test: index/{domain}_{split}.parquet" in yaml
            rows = pq.read_table(SYNTHETIC_TASKS / "index" / f"{domain}_{split}.parquet")
            assert rows.to_pydict() == {
                "domain": [domain] * size,
                "split": [split] * size,
                "index": list(range(size)),
            }


@pytest.fixture(scope="module")
def tasks(cache_dir):
    """Every eval task and one train task, loaded by lmms-eval from the shipped folder."""
    from lmms_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(SYNTHETIC_TASKS), include_defaults=False)
    assert set(_task_names()) <= set(manager.all_tasks)
    names = [f"mmneuron_synth_{d}_eval" for d in DOMAINS] + ["mmneuron_synth_remote_train"]
    return manager.load_task_or_group(names)


@pytest.mark.parametrize(
    "name", [f"mmneuron_synth_{d}_eval" for d in DOMAINS] + ["mmneuron_synth_remote_train"]
)
def test_task_serves_the_generated_samples_and_scores_exact_matches(tasks, name):
    task = tasks[name]
    domain, split = name.split("_")[2:4]
    docs = task.eval_docs
    assert len(docs) == SPLIT_SIZES[split]
    assert task.config.metadata["domain"] == domain
    assert task.config.generation_kwargs["max_new_tokens"] == 3
    assert task.config.generation_kwargs["do_sample"] is False
    for i in (0, 1, 2, len(docs) - 1):
        doc, sample = docs[i], generate(domain, split, i)
        [image] = task.doc_to_visual(doc)
        assert image.tobytes() == sample.image.tobytes()
        assert task.doc_to_text(doc) == sample.question
        assert task.doc_to_target(doc) == sample.answer
        wrong = next(
            a for a in questions(domain)[sample.question_type].answers if a != sample.answer
        )
        assert task.process_results(doc, [sample.answer]) == {"exact_match": 1.0}
        assert task.process_results(doc, [f" {sample.answer.upper()}.\n"]) == {"exact_match": 1.0}
        assert task.process_results(doc, [wrong]) == {"exact_match": 0.0}
        assert task.process_results(doc, [f"{sample.answer} {wrong}"]) == {"exact_match": 0.0}
