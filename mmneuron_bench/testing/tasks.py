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

_UTILS = """
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip().lower() == doc["answer"])}
"""


def write_tiny_task(
    root: str | Path,
    name: str,
    n_docs: int = 6,
    seed: int = 0,
    image_sizes: tuple[tuple[int, int], ...] = ((32, 32),),
) -> Path:
    """Write task folder ``root/name`` with ``n_docs`` image questions; returns the folder.

    The images take the ``(width, height)`` of ``image_sizes`` in turn.
    """
    from datasets import Dataset, Features, Image, Value

    rng = random.Random(seed)
    rows = {
        "question": [rng.choice(QUESTIONS) for _ in range(n_docs)],
        "answer": [rng.choice(("yes", "no", "red", "blue", "2")) for _ in range(n_docs)],
        "image": [
            tiny_image(seed * 10_000 + i, image_sizes[i % len(image_sizes)]) for i in range(n_docs)
        ],
    }
    features = Features({"question": Value("string"), "answer": Value("string"), "image": Image()})
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data.parquet"))
    (folder / "utils.py").write_text(_UTILS.lstrip())
    (folder / f"{name}.yaml").write_text(
        textwrap.dedent(
            f"""\
            task: {name}
            dataset_path: parquet
            dataset_kwargs:
              data_files:
                test: data.parquet
            test_split: test
            output_type: generate_until
            doc_to_visual: !function utils.doc_to_visual
            doc_to_text: !function utils.doc_to_text
            doc_to_target: answer
            process_results: !function utils.process_results
            generation_kwargs:
              max_new_tokens: 3
              do_sample: false
            metric_list:
              - metric: exact_match
                aggregation: mean
                higher_is_better: true
            """
        )
    )
    return folder
