"""Tiny offline lmms-eval task folders (parquet data + YAML + utils.py) for tests."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

from mmneuron_bench.testing.checkpoints import tiny_image

QUESTIONS = (
    "what color is the circle ?",
    "is there a red square on the left ?",
    "how many objects are in the image ?",
    "what shape is at the top ?",
    "is the triangle blue ?",
)

# The metrics a tiny task can score with: exact match, or a hash of the answer in [0, 1) that
# moves with every change of an answer (equal scores then mean equal answers).
METRICS = {
    "exact_match": 'float(results[0].strip().lower() == doc["answer"])',
    "answer_hash": "zlib.crc32(results[0].strip().encode()) / 2**32",
}

ANSWERS = ("yes", "no", "red", "blue", "2")

_UTILS = """import zlib


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {{"{metric}": {score}}}
"""


def write_tiny_task(
    root: str | Path,
    name: str,
    n_docs: int = 6,
    seed: int = 0,
    image_sizes: tuple[tuple[int, int], ...] = ((32, 32),),
    metric: str = "exact_match",
    multiple_choice: bool = False,
) -> Path:
    """Write task folder ``root/name`` with ``n_docs`` image questions; returns the folder.

    The images take the ``(width, height)`` of ``image_sizes`` in turn; ``metric`` is one of
    :data:`METRICS`. ``multiple_choice``: a loglikelihood task over the :data:`ANSWERS`
    instead (metric ``acc``).
    """
    from datasets import Dataset, Features, Image, Value

    rng = random.Random(seed)
    rows = {
        "question": [rng.choice(QUESTIONS) for _ in range(n_docs)],
        "answer": [rng.choice(ANSWERS) for _ in range(n_docs)],
        "image": [
            tiny_image(seed * 10_000 + i, image_sizes[i % len(image_sizes)]) for i in range(n_docs)
        ],
    }
    features = Features({"question": Value("string"), "answer": Value("string"), "image": Image()})
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data.parquet"))
    (folder / "utils.py").write_text(_UTILS.format(metric=metric, score=METRICS[metric]))
    if multiple_choice:
        output = f"""\
            output_type: multiple_choice
            doc_to_choice: {list(ANSWERS)}
            doc_to_target: answer
            metric_list:
              - metric: acc
            """
    else:
        output = f"""\
            output_type: generate_until
            doc_to_target: answer
            process_results: !function utils.process_results
            generation_kwargs:
              max_new_tokens: 3
              do_sample: false
            metric_list:
              - metric: {metric}
                aggregation: mean
                higher_is_better: true
            """
    (folder / f"{name}.yaml").write_text(
        textwrap.dedent(
            f"""\
            task: {name}
            dataset_path: parquet
            dataset_kwargs:
              data_files:
                test: data.parquet
            test_split: test
            doc_to_visual: !function utils.doc_to_visual
            doc_to_text: !function utils.doc_to_text
            """
        )
        + textwrap.dedent(output)
    )
    return folder
