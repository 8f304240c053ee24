"""RSVQA-LR for the "remote" (remote sensing) domain: exact match after EvalAI normalisation."""

from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor

_normalise = EvalAIAnswerProcessor()


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def process_results(doc, results):
    return {"accuracy": float(_normalise(results[0]) == _normalise(str(doc["answer"])))}
