"""Which exercises to grade: a chapter named on the command line, or the chapters the notebooks attempt."""

from __future__ import annotations

from lib.exercises import EXERCISES, Exercise
from lib.grading.notebooks import defined_names

__all__ = ["chapter_exercises", "infer_exercises"]


def chapter_exercises(chapter: str) -> list[Exercise]:
    """The registered exercises of ``chapter`` ("00"), in id order; ``ValueError`` if it has none."""
    chosen = [e for _, e in sorted(EXERCISES.items()) if e.chapter == chapter]
    if not chosen:
        known = ", ".join(sorted({e.chapter for e in EXERCISES.values()})) or "none"
        raise ValueError(f"--chapter: no exercises registered for chapter {chapter!r};"
                         f" chapters with exercises: {known}")
    return chosen


def infer_exercises(notebooks: list[list[str]]) -> list[Exercise]:
    """Every exercise of each chapter whose functions any notebook defines at top level.

    ``notebooks`` holds each readable submission's code cells. When no notebook defines any
    exercise's function, every registered exercise is graded (each comes out "missing").
    """
    names: set[str] = set()
    for cells in notebooks:
        names |= defined_names(cells)
    chapters = {e.chapter for e in EXERCISES.values() if e.function in names}
    return [e for _, e in sorted(EXERCISES.items()) if e.chapter in chapters or not chapters]
