"""A question type of a synthetic domain: its text and the closed set of answers it takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    """One question template; every sample of this type asks ``text`` and answers one word."""

    text: str
    answers: tuple[str, ...]

    @property
    def chance(self) -> float:
        """Accuracy of guessing without the image (answers are balanced per question)."""
        return 1.0 / len(self.answers)
