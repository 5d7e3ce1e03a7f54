"""NumPy float64 references for speculative decoding (Leviathan, Kalman & Matias, arXiv 2211.17192).

Notation: ``p`` is the target's next-token distribution, ``q`` the draft's. A round drafts
x̃_1..x̃_γ from q, scores γ + 1 positions with one target call, then

    accept x̃_i  iff  r_i < p_i(x̃_i) / q_i(x̃_i),       r_i ~ U[0, 1)
    at the first rejection i:  emit y ~ p'_i = (p_i − q_i)_+ / ‖(p_i − q_i)_+‖₁   and stop
    all γ accepted:            emit the bonus y ~ p_{γ+1}

Every random number is an argument, so the reference and the library can be compared token for
token. Sampling from a row w with a uniform u is the inverse CDF: the smallest index x with
cumsum(w)[x] > u · Σw (Σw read off the cumulative sum, so both sides round alike).

Speed: β = Σ_x min(p(x), q(x)) is the acceptance probability of one position,
α = E[β]; with i.i.d. β the tokens per target call are E = (1 − α^{γ+1}) / (1 − α) and the
speed-up for a draft step costing c target calls is S = E / (γ·c + 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lib.validation import check_positive_int

__all__ = [
    "PAIR_KINDS",
    "RESIDUAL_FLOOR",
    "alpha_of",
    "expected_tokens",
    "expected_tokens_from_betas",
    "inverse_cdf",
    "one_step_output_dist",
    "optimal_gamma",
    "random_pair",
    "random_step_case",
    "residual",
    "spec_step_ref",
    "speedup",
]

RESIDUAL_FLOOR = 1e-12
"""Below this mass the residual (p − q)_+ is rounding noise (p = q numerically): sample p instead."""


def inverse_cdf(weights: np.ndarray, u: float) -> int:
    """The smallest index x with cumsum(weights)[x] > u · total, for weights (V,) ≥ 0 and u in [0, 1).

    total is the last cumulative sum. When rounding pushes u · total to the total, the last index
    with positive weight is returned, so a zero-weight token is never drawn.
    """
    cdf = np.cumsum(weights)
    x = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return x if x < len(weights) else int(np.flatnonzero(weights)[-1])


def _residual_weights(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(p − q)_+ (V,), or p itself when that mass is below :data:`RESIDUAL_FLOOR`."""
    w = np.maximum(p - q, 0.0)
    return w if np.cumsum(w)[-1] >= RESIDUAL_FLOOR else p


def residual(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The distribution sampled after a rejection, p' = (p − q)_+ / ‖(p − q)_+‖₁, shape (V,).

    Falls back to p when ‖(p − q)_+‖₁ < 1e-12 (then p = q and no rejection can happen anyway).
    """
    w = _residual_weights(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))
    return w / w.sum()


def spec_step_ref(
    p_rows: np.ndarray, q_rows: np.ndarray, drafts: np.ndarray, uniforms: np.ndarray, u_resid: float
) -> list[int]:
    """One verification round, a loop over the drafted positions; returns the 1..γ+1 emitted tokens.

    p_rows (γ+1, V): target rows p_1..p_{γ+1}; q_rows (γ, V): the draft rows x̃ was drawn from;
    drafts (γ,) ints; uniforms (γ,) the r_i; u_resid the uniform of the residual or bonus draw.
    """
    p_rows, q_rows = np.asarray(p_rows, dtype=np.float64), np.asarray(q_rows, dtype=np.float64)
    emitted: list[int] = []
    for i, x in enumerate(np.asarray(drafts, dtype=np.int64)):
        if uniforms[i] < p_rows[i, x] / q_rows[i, x]:
            emitted.append(int(x))
            continue
        return emitted + [inverse_cdf(_residual_weights(p_rows[i], q_rows[i]), u_resid)]
    return emitted + [inverse_cdf(p_rows[len(emitted)], u_resid)]


def one_step_output_dist(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The exact law (V,) of the first token one round emits, by enumerating the draft x ~ q.

    P(emit y) = q(y)·min(1, p(y)/q(y)) + P(reject)·p'(y), with P(reject) = Σ_x q(x)(1 − min(1, p(x)/q(x))).
    The proof of exactness says this equals p for every q.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    accept = np.minimum(q, p)  # q(x) · min(1, p(x)/q(x)), written without dividing by q(x) = 0
    return accept + (1.0 - accept.sum()) * residual(p, q)


def alpha_of(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """β = Σ_x min(p(x), q(x)) = 1 − TV(p, q) per row: (…, V) → (…); the acceptance probability."""
    return np.minimum(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)).sum(axis=-1)


def _check_alpha(alpha: Any) -> np.ndarray:
    """``alpha`` as a float64 array, or a one-line error unless every value lies in [0, 1]."""
    values = np.asarray(alpha, dtype=np.float64)
    if not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"alpha: expected acceptance rates in [0, 1], got {alpha!r}")
    return values


def _check_cost(c: Any) -> None:
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not c >= 0:
        raise ValueError(f"c: expected a draft-step cost ≥ 0 (in target calls), got {c!r}")


def expected_tokens(alpha: float | np.ndarray, gamma: int) -> float | np.ndarray:
    """Tokens per target call with i.i.d. acceptance: E = Σ_{k=0}^{γ} α^k = (1 − α^{γ+1}) / (1 − α)."""
    check_positive_int("gamma", gamma)
    alpha = _check_alpha(alpha)
    return np.sum(np.power.outer(alpha, np.arange(gamma + 1)), axis=-1)


def speedup(alpha: float | np.ndarray, gamma: int, c: float) -> float | np.ndarray:
    """Wall-clock speed-up S = (1 − α^{γ+1}) / ((1 − α)(γ·c + 1)), c = draft step / target call."""
    _check_cost(c)
    return expected_tokens(alpha, gamma) / (gamma * c + 1.0)


def optimal_gamma(alpha: float, c: float, gmax: int) -> int:
    """The γ in 1..gmax with the largest :func:`speedup` (integer search, the first on ties)."""
    check_positive_int("gmax", gmax)
    return int(np.argmax([speedup(alpha, g, c) for g in range(1, gmax + 1)])) + 1


def expected_tokens_from_betas(betas: np.ndarray) -> float | np.ndarray:
    """Σ_{k=0}^{γ} Π_{i≤k} β_i for logged betas (…, γ): tokens per call without the i.i.d. assumption.

    k = 0 is the empty product 1 (the corrected or bonus token is always emitted).
    """
    betas = _check_alpha(betas)
    return 1.0 + np.cumprod(betas, axis=-1).sum(axis=-1)


# ----------------------------------------------------------------------------- seeded test inputs

PAIR_KINDS = ("dense", "sparse", "disjoint", "equal", "one-hot p", "one-hot q", "q zero where p > 0")
"""The (p, q) situations the exactness proof must survive, as :func:`random_pair` draws them."""


def _dirichlet(rng: np.random.Generator, vocab: int, support: np.ndarray | None = None) -> np.ndarray:
    """A random distribution (V,) on ``support`` (a boolean mask; everything if None), peaked or flat."""
    weights = rng.gamma(rng.choice([0.1, 0.5, 2.0]), size=vocab)
    if support is not None:
        weights = np.where(support, weights + 1e-3, 0.0)
    return weights / weights.sum()


def _random_support(rng: np.random.Generator, vocab: int) -> np.ndarray:
    """A random boolean mask (V,) keeping about half the tokens, never none."""
    support = rng.random(vocab) < 0.5
    support[rng.integers(vocab)] = True
    return support


def random_pair(rng: np.random.Generator, vocab: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A target/draft pair (p, q), each (V,) float64 summing to 1, of one of :data:`PAIR_KINDS` (V ≥ 2)."""
    half = rng.permutation(vocab) < vocab // 2  # a random half of the vocabulary
    if kind == "dense":
        return _dirichlet(rng, vocab), _dirichlet(rng, vocab)
    if kind == "sparse":
        return _dirichlet(rng, vocab, _random_support(rng, vocab)), _dirichlet(rng, vocab, _random_support(rng, vocab))
    if kind == "disjoint":
        return _dirichlet(rng, vocab, half), _dirichlet(rng, vocab, ~half)
    if kind == "equal":
        p = _dirichlet(rng, vocab)
        return p, p.copy()
    if kind == "one-hot p":
        return np.eye(vocab)[rng.integers(vocab)], _dirichlet(rng, vocab)
    if kind == "one-hot q":
        return _dirichlet(rng, vocab), np.eye(vocab)[rng.integers(vocab)]
    if kind == "q zero where p > 0":
        return _dirichlet(rng, vocab), _dirichlet(rng, vocab, half)
    raise ValueError(f"kind: expected one of {', '.join(PAIR_KINDS)}, got {kind!r}")


def random_step_case(
    rng: np.random.Generator, gamma: int, vocab: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Inputs of one round: p_rows (γ+1, V), q_rows (γ, V), drafts (γ,) drawn from q, uniforms (γ,), u_resid.

    Each position gets a pair of a random :data:`PAIR_KINDS`; the bonus row p_{γ+1} is dense.
    """
    pairs = [random_pair(rng, vocab, PAIR_KINDS[rng.integers(len(PAIR_KINDS))]) for _ in range(gamma)]
    p_rows = np.stack([p for p, _ in pairs] + [_dirichlet(rng, vocab)])
    q_rows = np.stack([q for _, q in pairs]).reshape(gamma, vocab)
    drafts = np.array([rng.choice(vocab, p=q) for q in q_rows], dtype=np.int64)
    return p_rows, q_rows, drafts, rng.random(gamma), float(rng.random())
