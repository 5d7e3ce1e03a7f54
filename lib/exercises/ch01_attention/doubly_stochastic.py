"""Check for exercise 01.5a: the orthostochastic (QR) attention normalizer.

The student writes ``qr_doubly_stochastic(S)``: S = Q R, A = Q ∘ Q, over the last two axes. The
checker looks at what any doubly stochastic map must satisfy first (shape, dtype, A ≥ 0, rows and
columns summing to 1), then at the particular matrix: the reference :func:`qr_dsm_np` (Gram–Schmidt
with diag(R) > 0). Column signs need no fixing: (±q)² = q², so every QR routine gives the same A.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from lib.attention.doubly_stochastic import qr_dsm_np
from lib.exercises.cases import call_fresh, expect_array, expect_close
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_qr_doubly_stochastic"]

_SUM_TOL = dict(atol=1e-12, rtol=0.0, reason="float64: n ≤ 17 squared entries of an orthogonal matrix sum to 1 "
                                              "up to a few ulps")
_REF_TOL = dict(atol=1e-10, rtol=1e-8, reason="float64: any QR (Householder, Gram–Schmidt) of a well-conditioned S "
                                               "gives the same Q up to column signs, to about eps·cond(S)")


def _qr_inputs() -> Iterator[tuple[str, np.ndarray]]:
    """(description, logits) pairs: small, awkward size, 1×1, a batch of heads, large and shifted logits."""
    rng = np.random.default_rng(15)
    yield "standard normal logits, shape (4, 4)", rng.standard_normal((4, 4))
    yield "an awkward size, shape (17, 17)", rng.standard_normal((17, 17))
    yield "a single token, shape (1, 1): A = [[1]]", -rng.uniform(1, 2, (1, 1))
    yield "a batch of 2 × 3 heads, shape (2, 3, 6, 6): QR over the last two axes", rng.standard_normal((2, 3, 6, 6))
    yield "logits of size ~1e3 (A does not change when S is scaled)", 1e3 * rng.standard_normal((8, 8))
    yield "attention-like logits S = X Xᵀ/√d + I, shape (10, 10)", _gram_plus_identity(rng, 10, 16)


def _gram_plus_identity(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """A symmetric positive definite (n, n) matrix X Xᵀ/√d + I, as a self-attention score matrix could be."""
    x = rng.standard_normal((n, d))
    return x @ x.T / np.sqrt(d) + np.eye(n)


def _expect_doubly_stochastic(case: str, A: np.ndarray) -> None:
    """A ≥ 0, every row sum and every column sum equal to 1 (over the last two axes)."""
    if A.min() < 0:
        where = tuple(int(i) for i in np.argwhere(A < 0)[0])
        raise CheckFailed(
            f"{case}: qr_doubly_stochastic(S) has negative entries (first at index {where}: {A[where]:.3g}); "
            "A = Q ∘ Q is a square, so it is never negative"
        )
    ones = np.ones(A.shape[:-1])
    expect_close(case, "the row sums of A", A.sum(axis=-1), ones, **_SUM_TOL)
    expect_close(case, "the column sums of A", A.sum(axis=-2), ones, **_SUM_TOL)


@register(
    "01.5a",
    function="qr_doubly_stochastic",
    points=2,
    summary="the orthostochastic attention map A = Q ∘ Q from the QR factorization S = Q R (last two axes)",
)
def check_qr_doubly_stochastic(fn: Callable) -> int:
    """Shape and dtype, A ≥ 0, row and column sums 1, then agreement with :func:`qr_dsm_np` on six cases."""
    cases = list(_qr_inputs())
    for i, (what, S) in enumerate(cases, 1):
        case = f"case {i} of {len(cases)} — {what}"
        A = expect_array(case, "qr_doubly_stochastic(S)", call_fresh(fn, S), S.shape)
        _expect_doubly_stochastic(case, A)
        expect_close(case, "qr_doubly_stochastic(S)", A, qr_dsm_np(S), **_REF_TOL)
    return len(cases)
