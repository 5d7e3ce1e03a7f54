"""The exercise registry: every exercise of the book, keyed by its id ("00.1a").

A chapter's check module registers its exercises with :func:`register`; :func:`check` is what a
student calls in a notebook, and the grader (``python -m lib.grading``) calls the same checkers.

A checker takes the student's function, calls it on fresh copies of seeded inputs, and either
returns the number of cases it checked or raises :class:`CheckFailed` (an ``AssertionError``)
whose message says what was wrong — the shape first, then the values. Any other exception comes
from the student's code and is left alone, so the notebook shows its traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

__all__ = ["CheckFailed", "EXERCISES", "Exercise", "Checker", "check", "get_exercise", "register"]

Checker = Callable[[Callable], int]

_ID = re.compile(r"^(\d{2}\.\d+)([a-z])$")  # "00.1a" → section "00.1", letter "a"


class CheckFailed(AssertionError):
    """A checker found the student's function wrong; the message says how."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: the function a student writes and the checker that grades it."""

    id: str
    section: str
    function: str
    checker: Checker
    points: int
    summary: str

    @property
    def chapter(self) -> str:
        """The chapter id, e.g. "00" for exercise "00.1a"."""
        return self.section.split(".")[0]


EXERCISES: dict[str, Exercise] = {}


def _section_of(exercise_id: str) -> str:
    match = _ID.match(exercise_id) if isinstance(exercise_id, str) else None
    if match is None:
        raise ValueError(f"register(exercise_id): expected an id like '00.1a' (section + letter), got {exercise_id!r}")
    return match.group(1)


def _validate_new(exercise: Exercise) -> None:
    if exercise.id in EXERCISES:
        raise ValueError(f"register(exercise_id): {exercise.id!r} is already registered")
    if not exercise.function.isidentifier():
        raise ValueError(f"register(function): expected a Python identifier, got {exercise.function!r}")
    if not isinstance(exercise.points, int) or exercise.points < 1:
        raise ValueError(f"register(points): expected a positive int, got {exercise.points!r}")
    if not exercise.summary.strip():
        raise ValueError("register(summary): expected a short sentence saying what to implement")
    clash = [e.id for e in EXERCISES.values() if e.chapter == exercise.chapter and e.function == exercise.function]
    if clash:
        raise ValueError(f"register(function): {exercise.function!r} is already the function of {clash[0]}")


def register(exercise_id: str, *, function: str, points: int, summary: str) -> Callable[[Checker], Checker]:
    """Decorator: register the decorated checker as exercise ``exercise_id``; returns it unchanged."""

    def decorate(checker: Checker) -> Checker:
        exercise = Exercise(exercise_id, _section_of(exercise_id), function, checker, points, summary)
        _validate_new(exercise)
        EXERCISES[exercise_id] = exercise
        return checker

    return decorate


def get_exercise(exercise_id: str) -> Exercise:
    """The registered exercise ``exercise_id``; ``ValueError`` listing the known ids otherwise."""
    try:
        return EXERCISES[exercise_id]
    except (KeyError, TypeError):
        known = ", ".join(sorted(EXERCISES)) or "none"
        raise ValueError(f"exercise_id: unknown exercise {exercise_id!r}; known ids: {known}") from None


def check(exercise_id: str, fn: Callable) -> None:
    """Run exercise ``exercise_id``'s checker on ``fn`` and print one line when every case passes.

    Raises ``AssertionError`` with the checker's sentence when a case fails; exceptions raised by
    ``fn`` itself (e.g. the stub's ``NotImplementedError``) propagate with their traceback.
    """
    exercise = get_exercise(exercise_id)
    if not callable(fn):
        raise TypeError(
            f"check(fn): expected the function {exercise.function} you wrote for {exercise_id}, "
            f"got a {type(fn).__name__}"
        )
    try:
        cases = exercise.checker(fn)
    except CheckFailed as failure:
        raise AssertionError(f"✗ {exercise_id} {exercise.function}: {failure}") from None
    print(f"✓ {exercise_id} {exercise.function}: all {cases} cases pass")
