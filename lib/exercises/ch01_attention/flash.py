"""Checks for sections 01.1 (the online-softmax step of FlashAttention) and 01.2 (the stable shift).

Both fold random tiles of seeded score rows through the student's function, in float64, and
compare the state after every tile with the one computed from the whole prefix at once.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from lib.attention.lowprec import reference_stable_shift
from lib.exercises.cases import call_fresh, expect_array, expect_close, random_cuts
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_online_softmax_step", "check_stable_shift"]

_EXACT = "a maximum involves no rounding, so m must match exactly"
_F64 = "float64; each tile rescales by one exp, a few ulps per tile"
_ATTENTION = "float64 attention from folded tiles vs one-shot softmax: summation order only"


def _one_shot(s: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, ℓ, Acc) of a whole prefix: m = max s, ℓ = Σ e^{s−m}, Acc = Σ e^{s−m} v; (−inf, 0, 0) if all −inf."""
    m = s.max(axis=-1)
    shift = np.where(np.isneginf(m), 0.0, m)
    p = np.exp(s - shift[:, None])
    return m, p.sum(axis=-1), p @ v


def _attention(s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(s) v row by row, 0 for a row that is all −inf."""
    _, ell, acc = _one_shot(s, v)
    return np.divide(acc, ell[:, None], out=np.zeros_like(acc), where=ell[:, None] > 0)


def _expect_triple(case: str, value: Any, rows: int, dv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise CheckFailed(f"{case}: online_softmax_step should return a triple (m, l, acc), "
                          f"got {type(value).__name__}")
    return (expect_array(case, "the m it returned", value[0], (rows,)),
            expect_array(case, "the l it returned", value[1], (rows,)),
            expect_array(case, "the acc it returned", value[2], (rows, dv)))


# ---------------------------------------------------------------- 01.1a online_softmax_step
def _step_inputs() -> Iterator[tuple[str, np.ndarray, np.ndarray, list[int]]]:
    """(description, scores (rows, n), values (n, dv), tile cuts)."""
    rng = np.random.default_rng(11)
    yield ("shape (4, 16), dv 3, tiles of 1 to 6 keys", rng.standard_normal((4, 16)),
           rng.standard_normal((16, 3)), random_cuts(rng, 16, 6))
    yield ("an awkward shape (37, 203), dv 5, tiles of 1 to 64 keys", 3 * rng.standard_normal((37, 203)),
           rng.standard_normal((203, 5)), random_cuts(rng, 203, 64))
    yield ("shape (3, 9), one key per tile", rng.standard_normal((3, 9)), rng.standard_normal((9, 2)),
           list(range(10)))
    s = rng.standard_normal((5, 30))
    s[0, :] = -np.inf
    s[1, :12] = -np.inf
    s[2, 8:20] = -np.inf
    yield ("row 0 all -inf (fully masked), row 1 -inf in its first 12 keys, row 2 in a middle tile",
           s, rng.standard_normal((30, 4)), [0, 8, 12, 20, 30])
    offsets = np.array([1e4, -1e4, 1e4, -1e4])[:, None]
    yield ("logits near ±1e4, where a plain exp overflows or underflows", offsets + rng.standard_normal((4, 24)),
           rng.standard_normal((24, 3)), random_cuts(rng, 24, 7))


@register(
    "01.1a",
    function="online_softmax_step",
    points=3,
    summary="fold one key tile into FlashAttention's running (m, l, acc): the inner loop of the forward pass",
)
def check_online_softmax_step(fn: Callable) -> int:
    """Fold each case's tiles through ``fn``: after every tile the state must be the prefix's state,
    and acc / l at the end must be softmax attention."""
    cases = list(_step_inputs())
    for i, (what, s, v, cuts) in enumerate(cases, 1):
        rows, dv = s.shape[0], v.shape[1]
        m, ell, acc = np.full(rows, -np.inf), np.zeros(rows), np.zeros((rows, dv))
        for t, (start, stop) in enumerate(zip(cuts[:-1], cuts[1:]), 1):
            case = f"case {i} of {len(cases)} — {what}, after tile {t} (keys {start}:{stop})"
            out = call_fresh(fn, m, ell, acc, s[:, start:stop], v[start:stop])
            m, ell, acc = _expect_triple(case, out, rows, dv)
            m_ref, ell_ref, acc_ref = _one_shot(s[:, :stop], v[:stop])
            expect_close(case, "m", m, m_ref, atol=0.0, rtol=0.0, reason=_EXACT)
            expect_close(case, "l", ell, ell_ref, atol=0.0, rtol=1e-12, reason=_F64)
            expect_close(case, "acc", acc, acc_ref, atol=1e-12, rtol=1e-12, reason=_F64)
        o = np.divide(acc, ell[:, None], out=np.zeros_like(acc), where=ell[:, None] > 0)
        expect_close(f"case {i} of {len(cases)} — {what}, the output acc / l", "acc / l", o, _attention(s, v),
                     atol=1e-12, rtol=1e-12, reason=_ATTENTION)
    return len(cases)


# ---------------------------------------------------------------- 01.2a stable_shift
def _shift_inputs() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(description, scores (rows, n), the previous shift (rows,))."""
    rng = np.random.default_rng(12)
    s = rng.standard_normal((3, 8)) + 2.0
    s[:, 3] = s[:, 5] = s.max(axis=-1) + 1.0          # a positive maximum, tied twice
    yield "ties at a positive maximum (shift by beta·m)", s, np.full(3, -np.inf)
    s = rng.standard_normal((3, 8)) - 6.0
    s[:, 0] = s[:, 7] = -0.5                            # a negative maximum, tied
    yield "ties at a negative maximum (shift by 0)", s, np.full(3, -np.inf)
    s = rng.standard_normal((4, 8))
    s[:, 2] = s.max(axis=-1) + 0.5                      # a unique maximum, the runner-up 0.5 below
    yield "no ties: shift by the row maximum as usual", s, np.full(4, -np.inf)
    s = rng.standard_normal((3, 6)) + 1.0
    s[:, 1] = s.max(axis=-1) + 0.2
    s[:, 4] = s[:, 1] - 5e-4                            # within tau = 1e-3 of the maximum: a tie
    yield "near-ties within tau of a positive maximum", s, np.full(3, -np.inf)
    s = rng.standard_normal((4, 10))
    s[0, :] = -np.inf                                   # a fully masked tile row keeps -inf
    yield "a previous shift larger than the tile's, and a fully masked row", s, np.array([-np.inf, 9.0, 0.1, -2.0])


def _attention_with_shift(fn: Callable, case: str, s: np.ndarray, v: np.ndarray, cuts: list[int],
                          beta: float, tau: float) -> np.ndarray:
    """Online softmax attention in float64 whose running shift comes from the student's function."""
    rows = s.shape[0]
    c, ell, acc = np.full(rows, -np.inf), np.zeros(rows), np.zeros((rows, v.shape[1]))
    for start, stop in zip(cuts[:-1], cuts[1:]):
        c_new = expect_array(case, "stable_shift(...)", call_fresh(fn, s[:, start:stop], c, beta, tau), (rows,))
        if np.any(c_new < c):
            raise CheckFailed(f"{case}: the shift decreased from one tile to the next (the running shift must "
                              "be max(tile shift, previous shift))")
        alpha = np.exp(c - c_new)
        p = np.exp(s[:, start:stop] - c_new[:, None])
        ell, acc, c = alpha * ell + p.sum(axis=-1), alpha[:, None] * acc + p @ v[start:stop], c_new
    return acc / ell[:, None]


@register(
    "01.2a",
    function="stable_shift",
    points=2,
    summary="the stable-max shift of 01.2: beta*m or 0 when the tile maximum is tied, else m; never decreasing",
)
def check_stable_shift(fn: Callable) -> int:
    """Compare ``fn(s_tile, m_prev, beta, tau)`` with the reference on five cases, then check that an
    online softmax driven by it gives exact attention on rows full of ties."""
    beta, tau = 2.0, 1e-3
    cases = list(_shift_inputs())
    for i, (what, s, m_prev) in enumerate(cases, 1):
        case = f"case {i} of {len(cases) + 1} — {what}"
        c = expect_array(case, "stable_shift(s_tile, m_prev, beta, tau)", call_fresh(fn, s, m_prev, beta, tau),
                         (s.shape[0],))
        expect_close(case, "the shift", c, reference_stable_shift(s, m_prev, beta, tau), atol=0.0, rtol=1e-15,
                     reason="a maximum, a comparison and one multiplication: exact")
    rng = np.random.default_rng(13)
    s = np.repeat(rng.standard_normal((6, 4)), 8, axis=1) * 4.0      # every score appears 8 times: ties everywhere
    v = rng.standard_normal((32, 3))
    case = f"case {len(cases) + 1} of {len(cases) + 1} — attention through the shift, rows full of ties"
    o = _attention_with_shift(fn, case, s, v, random_cuts(rng, 32, 9), beta, tau)
    expect_close(case, "attention", o, _attention(s, v), atol=1e-12, rtol=1e-12,
                 reason="softmax is shift-invariant: only rounding differs")
    return len(cases) + 1
