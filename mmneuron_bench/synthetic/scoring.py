"""How a synthetic task compares a model's answer with the reference answer."""

from __future__ import annotations


def normalize(text: str) -> str:
    """Lowercase, trim spaces and a trailing full stop."""
    return text.strip().lower().rstrip(".").strip()


def is_correct(prediction: str, answer: str) -> bool:
    """Exact match after normalising both sides."""
    return normalize(prediction) == normalize(answer)
