"""lmms-eval hooks of the synthetic domains: images come from the generator's cache.

The task's parquet file lists (domain, split, index); ``process_docs`` joins each row with
its generated sample, generating the whole split into the cache on first use.
"""

from mmneuron_bench.synthetic.cache import load_split
from mmneuron_bench.synthetic.scoring import is_correct


def process_docs(dataset):
    domains, splits = set(dataset["domain"]), set(dataset["split"])
    if len(domains) != 1 or len(splits) != 1:
        raise ValueError(f"one task lists one domain and split, not {domains} x {splits}")
    return load_split(domains.pop(), splits.pop()).select(dataset["index"])


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(is_correct(results[0], doc["answer"]))}


def process_context_docs(dataset):
    from mmneuron_bench.synthetic.context import load_context_split

    splits = set(dataset["split"])
    if len(splits) != 1:
        raise ValueError(f"one context task lists one split, not {splits}")
    return load_context_split(splits.pop()).select(dataset["index"])


def context_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["prompt"]


def process_conflict_results(doc, results):
    return {
        "exact_match": float(is_correct(results[0], doc["answer"])),
        "image_match": float(is_correct(results[0], doc["image_answer"])),
    }
