"""Check for section 01.3 (Delta Attention): ``delta_correct(o_sparse, o_dense_rows, gamma) -> o``.

Seeded float64 cases, shapes first: one block, N a multiple of γ, N not a multiple of γ (a short
last block), γ = 1 (every row representative) and a batch with heads. Then three properties in
the order a student can act on them: the representative rows equal the dense rows, every row of a
block is shifted by the same Δ, and the whole output equals the reference.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from lib.attention.delta import delta_correct_np
from lib.exercises.cases import call_fresh, expect_array, expect_close
from lib.exercises.registry import register

__all__ = ["check_delta_correct"]

_ATOL, _RTOL = 1e-12, 1e-12
_REASON = "float64: one subtraction and one addition per entry"


def _cases() -> Iterator[tuple[str, np.ndarray, np.ndarray, int]]:
    """(description, o_sparse (..., N, dv), o_dense_rows (..., ⌈N/γ⌉, dv), γ)."""
    rng = np.random.default_rng(13)
    for what, lead, n, dv, gamma in [
        ("one block: N = 8, γ = 8", (), 8, 4, 8),
        ("N = 32 a multiple of γ = 8", (), 32, 5, 8),
        ("N = 75 not a multiple of γ = 16 (the last block has 11 rows)", (), 75, 6, 16),
        ("γ = 1: every row is representative, so o = o_dense_rows", (), 9, 3, 1),
        ("γ = 64 > N = 50: one short block", (), 50, 4, 64),
        ("batch and heads, shape (2, 3, 40, 8), γ = 16", (2, 3), 40, 8, 16),
    ]:
        n_rows = -(-n // gamma)
        yield what, rng.standard_normal(lead + (n, dv)), rng.standard_normal(lead + (n_rows, dv)), gamma


@register(
    "01.3a",
    function="delta_correct",
    points=2,
    summary="Delta Attention's correction: add Δ_t = o_dense_t − o_sparse[tγ] to every row of block t",
)
def check_delta_correct(fn: Callable) -> int:
    """Compare ``fn(o_sparse, o_dense_rows, gamma)`` with :func:`lib.attention.delta.delta_correct_np`."""
    cases = list(_cases())
    for i, (what, o_sparse, o_rows, gamma) in enumerate(cases, 1):
        case = f"case {i} of {len(cases)} — {what}"
        returned = call_fresh(lambda a, b: fn(a, b, gamma), o_sparse, o_rows)   # gamma stays a Python int
        o = expect_array(case, "delta_correct(...)", returned, o_sparse.shape)
        expect_close(case, "the output at each representative row t·γ (it must equal o_dense_rows[t])",
                     o[..., ::gamma, :], o_rows, atol=_ATOL, rtol=_RTOL, reason=_REASON)
        shift = o - o_sparse
        first = np.repeat(shift[..., ::gamma, :], gamma, axis=-2)[..., : o.shape[-2], :]
        expect_close(case, "o − o_sparse (every row of a block must get the same shift as its first row)",
                     shift, first, atol=_ATOL, rtol=_RTOL, reason=_REASON)
        expect_close(case, "delta_correct(...)", o, delta_correct_np(o_sparse, o_rows, gamma),
                     atol=_ATOL, rtol=_RTOL, reason=_REASON)
    return len(cases)
