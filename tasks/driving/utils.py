"""LingoQA for the "driving" domain: the last frame, exact match and word-overlap F1."""

import re
from collections import Counter

from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor

_FRAME = re.compile(r"image_(\d+)$")
_normalise = EvalAIAnswerProcessor()


def doc_to_visual(doc):
    frames = sorted((int(m.group(1)), key) for key in doc if (m := _FRAME.match(key)))
    if not frames:
        raise KeyError(f"LingoQA document has no image_N column (columns: {sorted(doc)})")
    return [doc[frames[-1][1]].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc):
    return list(doc["answers"]) if "answers" in doc else [doc["answer"]]


def _token_f1(prediction, reference):
    predicted, expected = prediction.split(), reference.split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def process_results(doc, results):
    prediction = _normalise(results[0])
    references = [_normalise(answer) for answer in doc_to_target(doc)]
    return {
        "exact_match": float(prediction in references),
        "token_f1": max(_token_f1(prediction, reference) for reference in references),
    }
