"""Argument checks of the data layer that :mod:`lib.validation` does not already provide.

Each raises ``ValueError`` with one line in the house form ``<name>: expected <what>, got <what came>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["check_choice", "check_int_in_range", "check_seed"]


def check_choice(name: str, value: Any, known: Iterable[str]) -> None:
    """Raise unless ``value`` is one of the names in ``known`` (a corpus, a task); the message lists them."""
    known = sorted(known)
    if value not in known:
        raise ValueError(f"{name}: expected one of {', '.join(known)}, got {value!r}")


def check_int_in_range(name: str, value: Any, low: int, high: int) -> None:
    """Raise unless ``value`` is an int (not a bool) with ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")


def check_seed(seed: Any) -> None:
    """Raise unless ``seed`` is a non-negative int, as :func:`numpy.random.default_rng` takes it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
