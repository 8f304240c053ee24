"""DocVQA for the "documents" domain: lmms-eval's own DocVQA prompt, image and ANLS."""

from lmms_eval.api.metrics import anls
from lmms_eval.tasks.docvqa.utils import docvqa_doc_to_text, docvqa_doc_to_visual


def doc_to_visual(doc):
    return docvqa_doc_to_visual(doc)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return docvqa_doc_to_text(doc, lmms_eval_specific_kwargs)


def process_results(doc, results):
    return {"anls": anls(references=list(doc["answers"]), predictions=results)["anls"]}
