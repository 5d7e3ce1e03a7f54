"""Check for section 01.6 (attention-free causal mixing): the causal min activation.

The student writes ``causal_min_activation(x)`` for x (B, T, D): ``y_t = min(x_t, x_{t−1})`` with
``x_0 := x_1``. The checker first tests causality (changing positions after t must leave
y_{≤t} unchanged), then compares with :func:`lib.mixers.causal_activation.causal_pair_reduce_np`
on seeded cases. Everything is NumPy float64.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from lib.exercises.cases import call_fresh, expect_array, expect_close
from lib.exercises.registry import CheckFailed, register
from lib.mixers.causal_activation import causal_pair_reduce_np

__all__ = ["check_causal_min_activation"]

_ATOL, _RTOL = 1e-12, 1e-12
_REASON = "min selects one of its inputs; 1e-12 leaves room for formulas such as (a + b − |a − b|)/2"
_FUNCTION = "causal_min_activation(x)"


def _agreement_inputs() -> Iterator[tuple[str, np.ndarray]]:
    """(description, x (B, T, D)) pairs: small, awkward, one position, ties, large values."""
    rng = np.random.default_rng(16)
    yield "standard normal x, shape (2, 8, 4)", rng.standard_normal((2, 8, 4))
    yield "an awkward shape (3, 37, 59)", 3.0 * rng.standard_normal((3, 37, 59))
    yield "a single position, shape (2, 1, 5): y must equal x", rng.standard_normal((2, 1, 5))
    yield "small integers with many ties, shape (1, 12, 3)", rng.integers(-2, 3, size=(1, 12, 3)).astype(np.float64)
    yield "values of size 1e6 with a batch of 4, shape (4, 9, 2)", 1e6 * rng.standard_normal((4, 9, 2))


def _check_causality(fn: Callable, case: str) -> None:
    """Changing x after position t must leave y at positions 0 … t exactly as it was."""
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 20, 6))
    y = expect_array(case, _FUNCTION, call_fresh(fn, x), x.shape)
    for t in (0, 7, 18):
        changed = x.copy()
        changed[:, t + 1 :] = 10.0 + rng.standard_normal(changed[:, t + 1 :].shape)
        y_changed = expect_array(case, _FUNCTION, call_fresh(fn, changed), x.shape)
        moved = np.argwhere(y_changed[:, : t + 1] != y[:, : t + 1])
        if moved.size:
            b, s, d = (int(i) for i in moved[0])
            raise CheckFailed(
                f"{case}: changing only positions after t = {t} changed y[{b}, {s}, {d}] (position {s} ≤ {t}); "
                "y_t may use x_t and x_(t−1) only — np.roll wraps the last position into the first, "
                "and x[:, 1:] is the next position, not the previous one"
            )


@register(
    "01.6a",
    function="causal_min_activation",
    points=2,
    summary="the causal min activation y_t = min(x_t, x_(t-1)), x_0 := x_1, along T of x (B, T, D) in NumPy",
)
def check_causal_min_activation(fn: Callable) -> int:
    """Causality under perturbation of the future, then agreement with the reference on five cases."""
    cases = list(_agreement_inputs())
    total = len(cases) + 1
    _check_causality(fn, f"case 1 of {total} — causality, shape (2, 20, 6)")
    for i, (what, x) in enumerate(cases, 2):
        case = f"case {i} of {total} — {what}"
        y = expect_array(case, _FUNCTION, call_fresh(fn, x), x.shape)
        expect_close(case, _FUNCTION, y, causal_pair_reduce_np(x, "min"), atol=_ATOL, rtol=_RTOL, reason=_REASON)
    return total
