"""Check for section 07.2 (testing speculative sampling): the law of the number of accepted drafts.

The student's ``acceptance_length_law(betas, gamma) -> np.ndarray`` (γ+1,) is compared with
:func:`lib.decoding.toy.acceptance_length_law` on hand cases (where the answer can be written
down) and seeded random ones, must sum to 1, and must match a Monte Carlo simulation of rounds
with independent acceptances (a chi-square test, seeded, so it never fails a correct answer).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from lib.decoding.toy import acceptance_length_law
from lib.exercises.cases import expect_array, expect_close
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_acceptance_length_law"]

_F64 = dict(atol=1e-12, rtol=1e-12, reason="float64: at most γ products and one subtraction per entry")
_DRAWS = 20_000
_MIN_PVALUE = 1e-3


def _cases() -> Iterator[tuple[str, Any, int, np.ndarray | None]]:
    """(description, betas, gamma, hand-written law or None) tuples."""
    yield "β = (0.5, 0.5), γ = 2", np.array([0.5, 0.5]), 2, np.array([0.5, 0.25, 0.25])
    yield "one α = 0.8 for all γ = 4 positions (a float)", 0.8, 4, np.array([0.2, 0.16, 0.128, 0.1024, 0.4096])
    yield "β = (1, 0, 0.7), γ = 3: the second draft is always rejected", np.array([1.0, 0.0, 0.7]), 3, np.array([0.0, 1.0, 0.0, 0.0])
    yield "γ = 1, β = 0.3", np.array([0.3]), 1, np.array([0.7, 0.3])
    rng = np.random.default_rng(72)
    for gamma in (5, 8):
        yield f"random β of shape ({gamma},)", rng.uniform(0.2, 1.0, gamma), gamma, None


def _call(fn: Callable, betas: Any, gamma: int) -> Any:
    """``fn`` on a fresh copy of betas (a float stays a float)."""
    return fn(np.array(betas, copy=True) if isinstance(betas, np.ndarray) else betas, gamma)


def _simulated_counts(betas: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Counts (γ+1,) of N over ``draws`` rounds: position i accepted iff u_i < β_i, stop at the first rejection."""
    accepted = np.random.default_rng(seed).random((draws, len(betas))) < betas
    n = np.where(accepted.all(axis=1), len(betas), np.argmin(accepted, axis=1))
    return np.bincount(n, minlength=len(betas) + 1)


def _check_monte_carlo(fn: Callable) -> None:
    from lib.stats import chi2_pooled

    betas, gamma = np.array([0.9, 0.7, 0.8, 0.5, 0.6, 0.95]), 6
    case = f"the Monte Carlo test ({_DRAWS} simulated rounds, β = {betas.tolist()})"
    law = expect_array(case, "acceptance_length_law(betas, gamma)", _call(fn, betas, gamma), (gamma + 1,))
    if np.any(law < 0) or abs(law.sum() - 1) > 1e-9:
        raise CheckFailed(f"{case}: the law must be ≥ 0 and sum to 1, got {np.round(law, 4).tolist()}")
    counts = _simulated_counts(betas, _DRAWS, seed=73)
    stat, dof, pvalue = chi2_pooled(counts, law / law.sum())
    if not pvalue > _MIN_PVALUE:
        raise CheckFailed(
            f"{case}: simulated frequencies {np.round(counts / _DRAWS, 4).tolist()} do not fit your law "
            f"{np.round(law, 4).tolist()} (χ² = {stat:.1f}, {dof} dof, p-value {pvalue:.1e} ≤ {_MIN_PVALUE:g})"
        )


@register(
    "07.2a",
    function="acceptance_length_law",
    points=2,
    summary="the law of the number of accepted drafts in one round, from the per-position acceptance rates β_i",
)
def check_acceptance_length_law(fn: Callable) -> int:
    """Six cases against hand-written laws and the reference, the sum, then a Monte Carlo test."""
    cases = list(_cases())
    for i, (what, betas, gamma, by_hand) in enumerate(cases, 1):
        case = f"case {i} of {len(cases) + 1} — {what}"
        law = expect_array(case, "acceptance_length_law(betas, gamma)", _call(fn, betas, gamma), (gamma + 1,))
        expected = acceptance_length_law(betas, gamma) if by_hand is None else by_hand
        expect_close(case, "the law of N", law, expected, **_F64)
        expect_close(case, "the sum of the law", np.array([law.sum()]), np.ones(1), **_F64)
    _check_monte_carlo(fn)
    return len(cases) + 1
