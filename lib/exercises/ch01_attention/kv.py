"""Check for section 01.4 (Key-Value Transformer): single-head key-value attention in NumPy.

The student writes ``kv_attention(x, Wk, Wv) -> (out, logits)`` with K = x Wk, V = x Wv,
logits = K Kᵀ/√d_k and out = softmax_row(logits) V. Every case is seeded and float64; the
reference is :func:`lib.attention.kv.kv_attention_np` with one head.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from lib.attention.kv import kv_attention_np, kv_logits_np
from lib.exercises.cases import call_fresh, expect_array, expect_close
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_kv_attention"]

_ATOL, _RTOL = 1e-12, 1e-10
_REASON = "float64 throughout: a correct rewrite differs from the reference by a few ulps"
_SYMMETRY_REASON = "K Kᵀ is symmetric; float64 matmuls may order the two sums differently by a few ulps"


def _cases() -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(description, x (N, d), Wk (d, d_k), Wv (d, d_v)); weights scaled by 1/√d."""
    specs = [
        ("8 tokens, d = 16, d_k = d_v = 8", 8, 16, 8, 8, 1.0),
        ("an awkward shape: 13 tokens, d = 7, d_k = 5, d_v = 3", 13, 7, 5, 3, 1.0),
        ("a single token (its only weight is 1)", 1, 4, 4, 2, 1.0),
        ("large inputs, logits above 700 where a plain exp overflows", 6, 8, 8, 4, 20.0),
    ]
    rng = np.random.default_rng(14)
    for what, n, d, d_k, d_v, scale in specs:
        x = scale * rng.standard_normal((n, d))
        yield what, x, rng.standard_normal((d, d_k)) / np.sqrt(d), rng.standard_normal((d, d_v)) / np.sqrt(d)


def _expect_out_logits(case: str, value: object, n: int, d_v: int) -> tuple[np.ndarray, np.ndarray]:
    """``value`` must be a pair (out (n, d_v), logits (n, n)) of float64 arrays; returns it."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = f"a {type(value).__name__}" + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
        raise CheckFailed(f"{case}: kv_attention should return a pair (out, logits), got {got}")
    out = expect_array(case, "the out it returned", value[0], (n, d_v))
    logits = expect_array(case, "the logits it returned", value[1], (n, n))
    return out, logits


def _check_one(case: str, fn: Callable, x: np.ndarray, wk: np.ndarray, wv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapes, symmetric logits, then logits and out against the reference; returns (out, logits)."""
    out, logits = _expect_out_logits(case, call_fresh(fn, x, wk, wv), x.shape[0], wv.shape[1])
    expect_close(case, "logits vs logitsᵀ", logits, logits.T, atol=_ATOL, rtol=_RTOL, reason=_SYMMETRY_REASON)
    expect_close(case, "logits", logits, kv_logits_np(x, wk, 1)[0], atol=_ATOL, rtol=_RTOL, reason=_REASON)
    expect_close(case, "out", out, kv_attention_np(x, wk, wv, 1), atol=_ATOL, rtol=_RTOL, reason=_REASON)
    return out, logits


@register(
    "01.4a",
    function="kv_attention",
    points=2,
    summary="single-head key-value attention: logits K Kᵀ/√d_k (symmetric) and softmax(logits) V",
)
def check_kv_attention(fn: Callable) -> int:
    """Four seeded cases against the reference, then permutation equivariance on the first."""
    cases = list(_cases())
    total = len(cases) + 1
    for i, (what, x, wk, wv) in enumerate(cases, 1):
        _check_one(f"case {i} of {total} — {what}", fn, x, wk, wv)
    case = f"case {total} of {total} — tokens permuted: out and logits must permute with them"
    _, x, wk, wv = cases[0]
    perm = np.random.default_rng(15).permutation(x.shape[0])
    out, logits = _check_one(case, fn, x, wk, wv)
    out_p, logits_p = _check_one(case, fn, x[perm], wk, wv)
    expect_close(case, "out of permuted x", out_p, out[perm], atol=_ATOL, rtol=_RTOL, reason=_REASON)
    expect_close(case, "logits of permuted x", logits_p, logits[np.ix_(perm, perm)], atol=_ATOL, rtol=_RTOL,
                 reason=_REASON)
    return total
