"""Check for section 07.3 (Jacobi decoding): one block solved by parallel fixed-point iteration.

The student's ``jacobi_decode(step_fn, prefix, block_size) -> (tokens, n_iters)`` runs on toy
first-order LMs (:func:`lib.decoding.jacobi.markov_step_fn`). Tokens are integers, so they must
equal greedy decoding exactly. ``n_iters`` must equal the number of calls of ``step_fn`` (one
forward pass per iteration), lie within [k, min(k + 1, block_size)] where k is the reference's
count (:func:`lib.decoding.jacobi.jacobi_block_ref`, which stops one pass early when only the last
token is unconfirmed), and so never exceed block_size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lib.decoding.jacobi import StepFn, greedy_ref, jacobi_block_ref, markov_step_fn
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_jacobi_decode", "jacobi_cases"]


def jacobi_cases() -> Iterator[tuple[str, np.ndarray, np.ndarray, int]]:
    """(description, table (V,), prefix, block_size): seeded random chains, a counter, a fixed point."""
    rng = np.random.default_rng(73)
    for i, (vocab, size) in enumerate([(5, 4), (11, 8), (7, 1), (29, 16), (3, 6)]):
        table = rng.integers(0, vocab, size=vocab)
        prefix = rng.integers(0, vocab, size=int(rng.integers(1, 6)))
        yield f"random chain {i + 1}, V = {vocab}, block_size {size}", table, prefix, size
    yield "counter t → t + 1 (one token per iteration: needs all block_size passes)", (np.arange(12) + 1) % 12, \
        np.array([3, 11]), 10
    yield "every token maps to 0, the pad (one pass suffices)", np.zeros(6, dtype=np.int64), np.array([2, 5, 1]), 7


def _counting(step_fn: StepFn) -> tuple[StepFn, list[int]]:
    """``step_fn`` wrapped to count its calls (and hand out copies, so they may be modified)."""
    calls = [0]

    def counted(seq: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return step_fn(np.array(seq, copy=True)).copy()

    return counted, calls


def _unpack(case: str, value: Any, size: int) -> tuple[np.ndarray, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CheckFailed(f"{case}: jacobi_decode should return a pair (tokens, n_iters), got {type(value).__name__}")
    tokens, n_iters = np.asarray(value[0]), value[1]
    if tokens.shape != (size,):
        raise CheckFailed(f"{case}: tokens has shape {tokens.shape}, expected ({size},)")
    if not isinstance(n_iters, (int, np.integer)) or isinstance(n_iters, bool):
        raise CheckFailed(f"{case}: n_iters should be an int, got {type(n_iters).__name__}")
    return tokens, int(n_iters)


@register(
    "07.3a",
    function="jacobi_decode",
    points=2,
    summary="Jacobi decoding of one block: equals greedy, at most block_size forward passes",
)
def check_jacobi_decode(fn: Callable) -> int:
    """Compare ``fn`` with greedy decoding and the iteration bound on seven seeded toy chains."""
    cases = list(jacobi_cases())
    for i, (what, table, prefix, size) in enumerate(cases, 1):
        case = f"case {i} of {len(cases)} — {what}"
        step_fn = markov_step_fn(table)
        counted, calls = _counting(step_fn)
        tokens, n_iters = _unpack(case, fn(counted, prefix.copy(), size), size)
        expected = greedy_ref(step_fn, prefix, size)
        if not np.array_equal(tokens, expected):
            raise CheckFailed(f"{case}: tokens {tokens.tolist()} differ from greedy {expected.tolist()}")
        if n_iters != calls[0]:
            raise CheckFailed(f"{case}: n_iters = {n_iters} but step_fn was called {calls[0]} times (one per iteration)")
        least = jacobi_block_ref(step_fn, prefix, size, size)[1]
        if not least <= n_iters <= min(least + 1, size):
            raise CheckFailed(
                f"{case}: n_iters = {n_iters}, expected between {least} (the fastest exact stop) and "
                f"{min(least + 1, size)} (one confirming pass, never more than block_size = {size})"
            )
    return len(cases)
