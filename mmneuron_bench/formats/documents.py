"""Which documents a stats file counted: per domain and task, the document ids, kept compact.

In a stats file (metadata ``documents``) the ids of one task are written as ranges:
``"0-99"`` (0 to 99), ``"4"``, ``"0-98:2"`` (every second id, as one process of two records),
joined by commas and increasing. In memory they are ``{domain: {task: sorted ids}}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Documents = dict[str, dict[str, list[int]]]


def encode_ids(ids: Iterable[int]) -> str:
    """Sorted distinct ids as ranges: ``[0, 1, 2, 5, 7, 9]`` -> ``"0-2,5-9:2"``."""
    values = sorted(set(ids))
    parts, i = [], 0
    while i < len(values):
        j, step = i, values[i + 1] - values[i] if i + 1 < len(values) else 1
        while j + 1 < len(values) and values[j + 1] - values[j] == step:
            j += 1
        if j == i or (j == i + 1 and step > 1):
            parts.append(str(values[i]))
            i += 1
            continue
        suffix = "" if step == 1 else f":{step}"
        parts.append(f"{values[i]}-{values[j]}{suffix}")
        i = j + 1
    return ",".join(parts)


def decode_ids(text: str, at_most: int) -> list[int]:
    """The ids of :func:`encode_ids`' text; ``ValueError`` unless the ranges are well formed,
    increasing, and hold at most ``at_most`` ids (checked before any is listed)."""
    ranges = []
    for part in text.split(",") if text else []:
        first, _, rest = part.partition("-")
        last, _, step = rest.partition(":")
        start, stop, by = int(first), int(last or first), int(step or 1)
        if start < 0 or stop < start or by < 1 or (stop - start) % by:
            raise ValueError(f"{part!r} is not a range of document ids")
        if ranges and start <= ranges[-1][-1]:
            raise ValueError(f"{part!r} does not follow the range before it")
        ranges.append(range(start, stop + 1, by))
        if sum(len(r) for r in ranges) > at_most:
            raise ValueError(f"more than the {at_most} documents counted")
    return [i for r in ranges for i in r]


def encode(documents: Mapping[str, Mapping[str, list[int]]]) -> dict[str, dict[str, str]]:
    return {d: {t: encode_ids(ids) for t, ids in tasks.items()} for d, tasks in documents.items()}


def count(documents: Mapping[str, list[int]]) -> int:
    """Documents of one domain."""
    return sum(len(ids) for ids in documents.values())


def overlap(first: Documents, other: Documents) -> str | None:
    """``domain 'd', task 't': 3 documents (0-2)`` counted in both, or None."""
    for domain, tasks in other.items():
        for task, ids in tasks.items():
            both = set(ids) & set(first.get(domain, {}).get(task, ()))
            if both:
                return (
                    f"domain {domain!r}, task {task!r}: {len(both)} document"
                    f"{'s' if len(both) > 1 else ''} ({encode_ids(both)})"
                )
    return None


def union(all_documents: Iterable[Documents]) -> Documents:
    """Every domain's and task's ids of all of them (checked disjoint by :func:`overlap`)."""
    out: Documents = {}
    for documents in all_documents:
        for domain, tasks in documents.items():
            for task, ids in tasks.items():
                merged = out.setdefault(domain, {}).setdefault(task, [])
                merged[:] = sorted({*merged, *ids})
    return out
