"""Check for section 07.4 (lookahead decoding): greedy verification of pool n-grams.

The student's ``verify_greedy(candidates, target_argmax) -> list[int]`` is compared with
:func:`lib.decoding.lookahead.verify_greedy_ref` on hand cases and on seeded cases whose argmaxes
come from a toy first-order LM (as a real model's would, so the answer does not depend on how ties
between equally long candidates are broken), then plugged into
:func:`lib.decoding.lookahead.lookahead_decode_ref`, whose output must equal greedy decoding.
Tokens are integers: the tolerance is zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lib.decoding.jacobi import greedy_ref, markov_step_fn
from lib.decoding.lookahead import lookahead_decode_ref, verify_greedy_ref
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_verify_greedy", "verify_cases"]


def _consistent(c: int, candidates: np.ndarray, table: np.ndarray) -> np.ndarray:
    """target_argmax (G, N) of a first-order LM: column 0 after c, column j + 1 after cand[g, j]."""
    return np.hstack([np.full((len(candidates), 1), table[c]), table[candidates]])


def verify_cases() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(description, candidates (G, N − 1), target_argmax (G, N))."""
    table = np.array([1, 2, 3, 0, 4])                            # 0 → 1 → 2 → 3 → 0, 4 → 4
    yield "hand case: candidate 2 matches fully (0 → 1 2 3, then the free token 0)", \
        np.array([[1, 4, 4], [4, 4, 4], [1, 2, 3]]), _consistent(0, np.array([[1, 4, 4], [4, 4, 4], [1, 2, 3]]), table)
    yield "hand case: nothing matches, emit only the argmax after c", \
        np.array([[4, 1], [3, 3]]), _consistent(0, np.array([[4, 1], [3, 3]]), table)
    yield "hand case: a mismatch, then matches again (stop at the first mismatch)", \
        np.array([[1, 4, 0, 1]]), _consistent(0, np.array([[1, 4, 0, 1]]), table)
    rng = np.random.default_rng(74)
    for i in range(40):
        vocab, g, n = int(rng.integers(2, 6)), int(rng.integers(1, 6)), int(rng.integers(2, 6))
        table, c = rng.integers(0, vocab, vocab), int(rng.integers(vocab))
        chain = [int(table[c])]
        for _ in range(n - 2):
            chain.append(int(table[chain[-1]]))
        cands = np.tile(np.array(chain), (g, 1))
        noise = rng.random(cands.shape) < 0.3
        cands[noise] = rng.integers(0, vocab, int(noise.sum()))
        yield f"random case {i + 1}: V = {vocab}, G = {g}, N = {n}", cands, _consistent(c, cands, table)


def _as_tokens(case: str, value: Any) -> list[int]:
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, (int, np.integer)) for t in value):
        raise CheckFailed(f"{case}: verify_greedy should return a list of int token ids, got {type(value).__name__}")
    return [int(t) for t in value]


@register(
    "07.4a",
    function="verify_greedy",
    points=2,
    summary="greedy verification of lookahead candidates: longest matching prefix plus the free token",
)
def check_verify_greedy(fn: Callable) -> int:
    """43 verification cases against the reference, then lookahead decoding with ``fn`` = greedy."""
    cases = list(verify_cases())
    for i, (what, cands, argmax) in enumerate(cases, 1):
        case = f"case {i} of {len(cases) + 2} — {what}"
        got, expected = _as_tokens(case, fn(cands.copy(), argmax.copy())), verify_greedy_ref(cands, argmax)
        if len(got) != len(expected):
            raise CheckFailed(f"{case}: returned {len(got)} tokens {got}, expected {len(expected)}: {expected}")
        if got != expected:
            raise CheckFailed(f"{case}: returned {got}, expected {expected}")
    rng = np.random.default_rng(75)
    for k, (W, N, G) in enumerate([(3, 3, 3), (2, 4, 2)], len(cases) + 1):
        step_fn, prefix = markov_step_fn(rng.integers(0, 6, 6)), rng.integers(0, 6, 4)
        tokens, _ = lookahead_decode_ref(step_fn, prefix, 30, W, N, G, verify=fn)
        expected = greedy_ref(step_fn, prefix, 30)
        if not np.array_equal(tokens, expected):
            raise CheckFailed(
                f"case {k} of {len(cases) + 2} — lookahead decoding (W={W}, N={N}, G={G}) with your verify_greedy "
                f"on a toy chain: {tokens.tolist()} differs from greedy {expected.tolist()}"
            )
    return len(cases) + 2
