"""Check for section 07.7 (Direct Multi-Token Decoding): the cyclical mask.

The student's ``cyclical_mask(T, tau) -> (T, T) bools`` must equal
:func:`lib.decoding.dmtd.cyclical_mask` (anchors at 0, τ, 2τ, …) exactly: it is a boolean mask, so
the tolerance is zero. Hand cases first, then the structural facts with their own messages (τ = 1
is the causal mask; no position uses the future), then seeded random sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from lib.decoding.dmtd import cyclical_mask
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_cyclical_mask", "mask_cases"]

HAND_CASE = np.array(
    [[1, 0, 0, 0, 0],
     [1, 0, 0, 0, 0],
     [1, 1, 1, 0, 0],
     [1, 1, 1, 0, 0],
     [1, 1, 1, 1, 1]], dtype=bool,
)
"""T = 5, τ = 2, written out by hand."""


def mask_cases() -> Iterator[tuple[str, int, int]]:
    """(description, T, τ): edge cases, then seeded random sizes."""
    yield "one position", 1, 3
    yield "τ = 1 (every position an anchor: the causal mask)", 7, 1
    yield "τ longer than the sequence (one cycle)", 4, 9
    yield "T a multiple of τ", 12, 4
    rng = np.random.default_rng(77)
    for i in range(20):
        yield f"random case {i + 1}", int(rng.integers(1, 40)), int(rng.integers(1, 7))


def _as_mask(case: str, value: object, T: int) -> np.ndarray:
    mask = np.asarray(value)
    if mask.shape != (T, T):
        raise CheckFailed(f"{case}: the mask has shape {mask.shape}, expected ({T}, {T})")
    if mask.dtype != bool:
        raise CheckFailed(f"{case}: the mask has dtype {mask.dtype}, expected bool")
    return mask


def _first_wrong_row(mask: np.ndarray, expected: np.ndarray) -> str:
    t = int(np.argmax((mask != expected).any(axis=1)))
    return f"row t = {t} is {mask[t].astype(int).tolist()}, expected {expected[t].astype(int).tolist()}"


@register(
    "07.7a",
    function="cyclical_mask",
    points=1,
    summary="DMTD's cyclical mask: C[t, s] = s ≤ τ⌊t/τ⌋, causal, τ = 1 is the causal mask",
)
def check_cyclical_mask(fn: Callable) -> int:
    """Compare ``fn`` with the hand case, the causal mask at τ = 1 and the reference on seeded sizes."""
    mask = _as_mask("hand case T = 5, τ = 2", fn(5, 2), 5)
    if not np.array_equal(mask, HAND_CASE):
        raise CheckFailed(f"hand case T = 5, τ = 2: {_first_wrong_row(mask, HAND_CASE)}")
    cases = list(mask_cases())
    for i, (what, T, tau) in enumerate(cases, 1):
        case = f"case {i} of {len(cases)} — {what}, T = {T}, τ = {tau}"
        mask = _as_mask(case, fn(T, tau), T)
        if np.triu(mask, k=1).any():
            raise CheckFailed(f"{case}: a position uses a later one (the mask must be lower triangular)")
        if tau == 1 and not np.array_equal(mask, np.tril(np.ones((T, T), dtype=bool))):
            raise CheckFailed(f"{case}: with τ = 1 every position is an anchor, so the mask must be the causal one")
        expected = cyclical_mask(T, tau)
        if not np.array_equal(mask, expected):
            raise CheckFailed(f"{case}: {_first_wrong_row(mask, expected)}")
    return len(cases) + 1
