"""VQAv2 for the "common" domain: lmms-eval's own VQAv2 prompt, image and accuracy."""

from lmms_eval.tasks.vqav2.utils import (
    vqav2_doc_to_text,
    vqav2_doc_to_visual,
    vqav2_process_results,
)


def doc_to_visual(doc):
    return vqav2_doc_to_visual(doc)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return vqav2_doc_to_text(doc, lmms_eval_specific_kwargs)


def process_results(doc, results):
    # lmms-eval normalises the human answers in place, so it gets copies. It leaves one human
    # out by comparing whole entries: the index keeps identical entries apart when a copy of
    # the data has no answer_id.
    answers = [{**answer, "human": i} for i, answer in enumerate(doc["answers"])]
    scored = vqav2_process_results({**doc, "answers": answers}, results)
    return {"vqa_accuracy": scored["exact_match"]}
