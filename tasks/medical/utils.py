"""PMC-VQA for the "medical" domain: four options, scored by the letter the model picks."""

import re

from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

LETTERS = ("A", "B", "C", "D")
_PREFIX = re.compile(r"^\s*[A-D]\s*:\s*")  # the official CSV writes "A:Diffuse uptake pattern"


def _field(doc, name):
    """The column ``name`` whatever its case and whether it separates words by "_" or " "."""
    for key, value in doc.items():
        if key.lower().replace("_", " ") == name:
            return value
    raise KeyError(f"PMC-VQA document has no column like {name!r} (columns: {sorted(doc)})")


def doc_to_visual(doc):
    return [_field(doc, "image").convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    options = "\n".join(
        f"{letter}. {_PREFIX.sub('', str(_field(doc, f'choice {letter.lower()}')))}"
        for letter in LETTERS
    )
    question = _field(doc, "question")
    return f"{kwargs.get('pre_prompt', '')}{question}\n{options}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc):
    return str(_field(doc, "answer label")).strip().upper()


def process_results(doc, results):
    picked = extract_mcq_answer(results[0], list(LETTERS))
    return {"accuracy": float(picked == doc_to_target(doc))}
