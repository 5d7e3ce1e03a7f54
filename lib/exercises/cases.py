"""Small tools every checker uses: call on fresh copies, validate what came back, compare.

Each helper raises :class:`~lib.exercises.registry.CheckFailed` with a sentence that starts with
the case being checked, so the student reads e.g.
``case 4 of 6 (logits around ±1e4): softmax_rows returned shape (6, 9), expected (6, 10)``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lib.agreement import agree
from lib.exercises.registry import CheckFailed

__all__ = ["call_fresh", "expect_array", "expect_close", "expect_pair", "random_cuts"]


def call_fresh(fn: Callable, *arrays: np.ndarray) -> Any:
    """``fn(*copies)``: the student may modify their inputs without spoiling the checker's."""
    return fn(*(np.array(a, copy=True) for a in arrays))


def expect_array(case: str, name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` must be a float64 ``numpy.ndarray`` of ``shape``; returns it."""
    if not isinstance(value, np.ndarray):
        raise CheckFailed(f"{case}: {name} should be a numpy.ndarray, got {type(value).__name__}")
    if value.shape != shape:
        raise CheckFailed(f"{case}: {name} has shape {value.shape}, expected {shape}")
    if value.dtype != np.float64:
        raise CheckFailed(f"{case}: {name} has dtype {value.dtype}, expected float64 (keep the input's precision)")
    return value


def _kind(value: Any) -> str:
    """'a tuple of length 3', 'a ndarray': what came back, for a message."""
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


def expect_pair(case: str, function: str, value: Any, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``value`` must be a pair ``(m, l)`` of float64 arrays of shape ``(rows,)``; returns it."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CheckFailed(f"{case}: {function} should return a pair (m, l), got {_kind(value)}")
    m = expect_array(case, "the m it returned", value[0], (rows,))
    l = expect_array(case, "the l it returned", value[1], (rows,))
    return m, l


def expect_close(
    case: str, name: str, actual: np.ndarray, expected: np.ndarray, *, atol: float, rtol: float, reason: str
) -> None:
    """Elementwise ``|actual - expected| <= atol + rtol |expected|``, with -inf/NaN patterns matched."""
    try:
        agree(name, actual, expected, atol=atol, rtol=rtol, reason=reason, quiet=True)
    except AssertionError as failure:
        raise CheckFailed(f"{case}: {failure} [tolerance: {reason}]") from None


def random_cuts(rng: np.random.Generator, n: int, widest: int) -> list[int]:
    """Column boundaries 0 = c_0 < c_1 < ... = n with gaps drawn from 1..widest: random tiles of a row."""
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(1, widest + 1))))
    return cuts
