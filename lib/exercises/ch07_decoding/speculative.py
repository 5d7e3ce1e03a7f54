"""Check for section 07.1 (speculative decoding): one verification round, every random number given.

The student's ``speculative_step(p_rows, q_rows, drafts, uniforms, u_resid) -> list[int]`` is
compared token for token with :func:`lib.decoding.reference.spec_step_ref` on 500 seeded rounds
(integers: the tolerance is zero), checked for its structure (1 to γ + 1 tokens, the drafts in
order, nothing drafted after a rejection), and run 20 000 times with fresh uniforms so that a
chi-square test can compare the law of its first token with the target row p_1.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lib.decoding.reference import random_step_case, spec_step_ref
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_speculative_step"]

_ROUNDS = 500
_DRAWS = 20_000
_MIN_PVALUE = 1e-3  # a correct rule fails once in a thousand seeds; the seed is fixed, so never


def _call(fn: Callable, p_rows: np.ndarray, q_rows: np.ndarray, drafts: np.ndarray, uniforms: np.ndarray,
          u_resid: float) -> Any:
    """``fn`` on fresh copies: the student may modify their inputs without spoiling the checker's."""
    return fn(p_rows.copy(), q_rows.copy(), drafts.copy(), uniforms.copy(), u_resid)


def _as_tokens(case: str, value: Any, vocab: int) -> list[int]:
    """``value`` as a list of Python ints in [0, vocab), or a CheckFailed that says what came back."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise CheckFailed(f"{case}: speculative_step should return a list of token ids, got {type(value).__name__}")
    if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in value):
        kinds = sorted({type(t).__name__ for t in value})
        raise CheckFailed(
            f"{case}: speculative_step should return int token ids, got elements of type {', '.join(kinds)}"
        )
    if any(not 0 <= t < vocab for t in value):
        raise CheckFailed(f"{case}: speculative_step returned {list(value)}, but token ids lie in [0, {vocab})")
    return [int(t) for t in value]


def _check_structure(case: str, tokens: list[int], drafts: np.ndarray) -> None:
    """1 to γ + 1 tokens, and every token but the last is the draft at its position."""
    gamma = len(drafts)
    if not 1 <= len(tokens) <= gamma + 1:
        raise CheckFailed(f"{case}: speculative_step returned {len(tokens)} tokens, expected 1 to γ + 1 = {gamma + 1}")
    accepted = tokens[:-1]
    if accepted != drafts[: len(accepted)].tolist():
        raise CheckFailed(
            f"{case}: all tokens but the last must be the accepted drafts in order {drafts.tolist()[:len(accepted)]}, "
            f"got {accepted} (after a rejection, no later draft may be emitted)"
        )


def _check_rounds(fn: Callable) -> None:
    rng = np.random.default_rng(71)
    for i in range(1, _ROUNDS + 1):
        gamma, vocab = int(rng.integers(1, 9)), int(rng.integers(2, 30))
        p_rows, q_rows, drafts, uniforms, u_resid = random_step_case(rng, gamma, vocab)
        case = f"round {i} of {_ROUNDS} (γ = {gamma}, V = {vocab})"
        tokens = _as_tokens(case, _call(fn, p_rows, q_rows, drafts, uniforms, u_resid), vocab)
        _check_structure(case, tokens, drafts)
        expected = spec_step_ref(p_rows, q_rows, drafts, uniforms, u_resid)
        if tokens != expected:
            raise CheckFailed(
                f"{case}: speculative_step returned {tokens}, expected {expected} "
                f"(drafts {drafts.tolist()}, uniforms {np.round(uniforms, 3).tolist()}, u_resid {u_resid:.3f})"
            )


def _first_token_counts(fn: Callable, p_rows: np.ndarray, q_rows: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """How often each token came first over ``draws`` rounds with drafts from q and fresh uniforms."""
    rng = np.random.default_rng(seed)
    gamma, vocab = q_rows.shape
    counts = np.zeros(vocab, dtype=np.int64)
    for _ in range(draws):
        drafts = np.array([rng.choice(vocab, p=q) for q in q_rows], dtype=np.int64)
        returned = _call(fn, p_rows, q_rows, drafts, rng.random(gamma), float(rng.random()))
        tokens = _as_tokens("the chi-square test", returned, vocab)
        counts[tokens[0]] += 1
    return counts


def _check_law(fn: Callable) -> None:
    """Chi-square of the first emitted token against p_1, with a draft blind to the target's favourite."""
    from lib.stats import chi2_pooled

    p_rows = np.array([[0.45, 0.25, 0.15, 0.1, 0.05, 0.0], [0.1, 0.2, 0.3, 0.2, 0.1, 0.1], [1 / 6] * 6])
    q_rows = np.array([[0.0, 0.1, 0.2, 0.3, 0.2, 0.2], [0.3, 0.1, 0.1, 0.1, 0.2, 0.2]])  # q_1 = 0 where p_1 is largest
    counts = _first_token_counts(fn, p_rows, q_rows, _DRAWS, seed=72)
    impossible = np.flatnonzero((p_rows[0] == 0) & (counts > 0))
    if impossible.size:
        raise CheckFailed(
            f"the chi-square test: the first emitted token was {impossible[0]} in {counts[impossible[0]]} of {_DRAWS} "
            f"rounds, but the target gives it probability 0 (p_1 = {p_rows[0].tolist()})"
        )
    support = p_rows[0] > 0
    stat, dof, pvalue = chi2_pooled(counts[support], p_rows[0][support])
    if not pvalue > _MIN_PVALUE:
        raise CheckFailed(
            f"the chi-square test: over {_DRAWS} rounds the first emitted token has frequencies "
            f"{np.round(counts / _DRAWS, 3).tolist()}, expected the target row p_1 = {p_rows[0].tolist()} "
            f"(χ² = {stat:.1f} with {dof} degrees of freedom, p-value {pvalue:.1e} ≤ {_MIN_PVALUE:g})"
        )


@register(
    "07.1a",
    function="speculative_step",
    points=3,
    summary="one speculative-decoding round in NumPy: accept drafts while r < p/q, then a residual or bonus token",
)
def check_speculative_step(fn: Callable) -> int:
    """500 rounds against the reference, then the chi-square test of the first token's law."""
    _check_rounds(fn)
    _check_law(fn)
    return _ROUNDS + 1
