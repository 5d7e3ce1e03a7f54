"""Hypothesis tests for samplers, written out (no SciPy): chi-square goodness of fit, two-sample
chi-square, Welch's t-test, a permutation test for histograms of dependent observations, and the
p-values behind them.

A sampler that claims an exact law (speculative decoding, 07.2) can only be tested statistically:
draw N samples, compare the histogram with the claimed probabilities, and reject when the
discrepancy is too large to be chance. A test never proves a sampler right; its *power* is shown
by feeding it deliberately broken samplers, which it must reject.

p-values come from the regularized incomplete gamma and beta functions::

    P(χ²_k > s)      = Q(k/2, s/2)                   Q(a, x) = Γ(a, x) / Γ(a)
    P(|T_ν| > t)     = I_{ν/(ν+t²)}(ν/2, 1/2)         I_x(a, b) the regularized incomplete beta

evaluated by their power series or continued fractions (modified Lentz), with ``math.lgamma``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "beta_inc",
    "chi2_pooled",
    "chi2_sf",
    "gamma_inc_upper",
    "permutation_chi2",
    "pool_sparse_cells",
    "student_t_sf2",
    "two_sample_chi2",
    "welch_t",
]

_EPS = 1e-15
_TINY = 1e-300
_MAX_TERMS = 10_000
_PERMUTATION_CHUNK = 256


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")


# ----------------------------------------------------------------------------- special functions


def _gamma_series(a: float, x: float) -> float:
    """P(a, x) = γ(a, x)/Γ(a) by the series e^{−x} x^a / Γ(a+1) · Σ_n x^n / ((a+1)…(a+n)), for x < a + 1."""
    term = total = 1.0 / a
    for n in range(1, _MAX_TERMS):
        term *= x / (a + n)
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _lentz(coefficient: Any, b0: float) -> float:
    """Evaluate b0 + a_1/(b_1 + a_2/(b_2 + …)) with ``coefficient(n) -> (a_n, b_n)`` (modified Lentz)."""
    f = b0 if b0 != 0 else _TINY
    c, d = f, 0.0
    for n in range(1, _MAX_TERMS):
        a_n, b_n = coefficient(n)
        d = b_n + a_n * d
        d = 1.0 / (d if d != 0 else _TINY)
        c = b_n + a_n / c
        c = c if c != 0 else _TINY
        f *= c * d
        if abs(c * d - 1.0) < _EPS:
            break
    return f


def _gamma_fraction(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x)/Γ(a) by its continued fraction e^{−x} x^a / Γ(a) · 1/(x + 1 − a − 1·(1−a)/(x + 3 − a − …)), x ≥ a + 1."""
    fraction = _lentz(lambda n: (-n * (n - a), x + 2 * n + 1 - a), x + 1 - a)
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) / fraction


def gamma_inc_upper(a: float, x: float) -> float:
    """The regularized upper incomplete gamma Q(a, x) = (1/Γ(a)) ∫_x^∞ t^{a−1} e^{−t} dt, a > 0, x ≥ 0."""
    _check_positive("a", a)
    if not x >= 0:
        raise ValueError(f"x: expected a number ≥ 0, got {x!r}")
    if x == 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    return 1.0 - _gamma_series(a, x) if x < a + 1 else _gamma_fraction(a, x)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (even and odd terms d_{2m}, d_{2m+1}), converging for x < (a+1)/(a+b+2)."""

    def coefficient(n: int) -> tuple[float, float]:
        m = n // 2
        if n % 2 == 0:
            return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), 1.0
        return -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)), 1.0

    return _lentz(coefficient, 1.0)


def beta_inc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b) = B(x; a, b)/B(a, b), a, b > 0, 0 ≤ x ≤ 1.

    I_x(a, b) = x^a (1−x)^b / (a B(a, b)) · 1/(1 + d_1/(1 + d_2/(1 + …))), using the symmetry
    I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly.
    """
    _check_positive("a", a)
    _check_positive("b", b)
    if not 0 <= x <= 1:
        raise ValueError(f"x: expected a number in [0, 1], got {x!r}")
    if x in (0, 1):
        return float(x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) / (a * _beta_fraction(a, b, x))
    return 1.0 - math.exp(log_front) / (b * _beta_fraction(b, a, 1 - x))


def chi2_sf(stat: float, dof: int) -> float:
    """P(χ²_dof > stat) = Q(dof/2, stat/2): the p-value of a chi-square statistic."""
    _check_positive("dof", dof)
    return gamma_inc_upper(dof / 2, max(float(stat), 0.0) / 2)


def student_t_sf2(t: float, dof: float) -> float:
    """Two-sided P(|T_dof| > |t|) = I_{dof/(dof+t²)}(dof/2, 1/2)."""
    _check_positive("dof", dof)
    return beta_inc(dof / 2, 0.5, dof / (dof + float(t) ** 2))


# ----------------------------------------------------------------------------- tests


def _as_counts(name: str, counts: Any) -> np.ndarray:
    """A 1-d float64 array of finite counts ≥ 0."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-d array of counts, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"{name}: expected finite counts ≥ 0, got min {counts.min()!r}")
    return counts


def pool_sparse_cells(expected: np.ndarray, min_expected: float) -> np.ndarray:
    """Group label (K,) of each cell: cells with expected count < min_expected are pooled into one group.

    Sparse cells are merged from the smallest expected count up until the pooled cell reaches
    ``min_expected``; if all the sparse cells together stay below it, the pool also takes the
    smallest dense cell, so no group is left with an expected count under the threshold (unless
    the whole table is smaller).
    """
    order = np.argsort(expected, kind="stable")
    labels = np.arange(expected.size)
    sparse = order[expected[order] < min_expected]
    if sparse.size == 0:
        return labels
    pooled, taken = 0.0, 0
    for taken, cell in enumerate(order, 1):
        pooled += expected[cell]
        if pooled >= min_expected and taken >= sparse.size:
            break
    labels[order[:taken]] = order[0]
    return np.unique(labels, return_inverse=True)[1]


def chi2_pooled(counts: Any, probs: Any, min_expected: float = 5.0) -> tuple[float, int, float]:
    """Pearson's goodness-of-fit test of observed ``counts`` (K,) against cell ``probs`` (K,) → (stat, dof, pvalue).

    E_k = N p_k; cells with E_k < ``min_expected`` are pooled (:func:`pool_sparse_cells`) so the
    χ² approximation holds; stat = Σ_groups (O − E)²/E with dof = groups − 1. A count in a cell of
    probability 0 is impossible under the hypothesis: stat = inf, p-value 0.
    """
    counts = _as_counts("counts", counts)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != counts.shape:
        raise ValueError(f"probs: expected shape {counts.shape} (one probability per count), got {probs.shape}")
    if np.any(probs < 0) or abs(probs.sum() - 1) > 1e-9:
        raise ValueError(f"probs: expected probabilities ≥ 0 summing to 1, got sum {probs.sum()!r}")
    _check_positive("min_expected", min_expected)
    n = counts.sum()
    if n == 0:
        raise ValueError("counts: expected at least one observation, got all zeros")
    labels = pool_sparse_cells(n * probs, min_expected)
    observed, expected = np.bincount(labels, counts), np.bincount(labels, n * probs)
    dof = max(observed.size - 1, 1)
    if np.any((probs == 0) & (counts > 0)):
        return math.inf, dof, 0.0
    stat = float(np.sum(np.divide((observed - expected) ** 2, expected, out=np.zeros_like(expected), where=expected > 0)))
    return stat, dof, chi2_sf(stat, dof)


def two_sample_chi2(a: Any, b: Any, min_expected: float = 5.0) -> tuple[float, int, float]:
    """Do two histograms a, b (K,) come from the same law? The 2×K contingency test → (stat, dof, pvalue).

    Under H0 the pooled law is π_k = (a_k + b_k)/(N_a + N_b); E_ak = N_a π_k, E_bk = N_b π_k.
    Columns whose smaller expected count is below ``min_expected`` are pooled; stat sums
    (O − E)²/E over both rows, dof = columns − 1.
    """
    a, b = _as_counts("a", a), _as_counts("b", b)
    if a.shape != b.shape:
        raise ValueError(f"b: expected shape {a.shape} (the shape of a), got {b.shape}")
    _check_positive("min_expected", min_expected)
    n_a, n_b = a.sum(), b.sum()
    if n_a == 0 or n_b == 0:
        raise ValueError(f"a, b: expected observations in both histograms, got totals {n_a:g} and {n_b:g}")
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    share = (a + b) / (n_a + n_b)
    labels = pool_sparse_cells(min(n_a, n_b) * share, min_expected)
    a, b, share = np.bincount(labels, a), np.bincount(labels, b), np.bincount(labels, share)
    stat = float(np.sum((a - n_a * share) ** 2 / (n_a * share) + (b - n_b * share) ** 2 / (n_b * share)))
    dof = max(a.size - 1, 1)
    return stat, dof, chi2_sf(stat, dof)


def welch_t(a: Any, b: Any) -> tuple[float, float, float]:
    """Welch's two-sample t-test of equal means, unequal variances → (t, dof, two-sided pvalue).

    t = (ā − b̄)/√(s_a²/n_a + s_b²/n_b); dof by Welch–Satterthwaite,
    ν = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1)).
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 1 or x.size < 2 or not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: expected a 1-d sample of at least 2 finite values, got shape {x.shape}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        raise ValueError("a, b: expected some variance, got two constant samples")
    t = float((a.mean() - b.mean()) / math.sqrt(va + vb))
    dof = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
    return t, dof, student_t_sf2(t, dof)


def _chi2_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sample chi-square statistic of histogram rows a, b (..., K), cells with no counts left out."""
    n_a, n_b = a.sum(-1, keepdims=True), b.sum(-1, keepdims=True)
    total = a + b
    share = np.divide(total, n_a + n_b, out=np.zeros_like(total), where=total > 0)
    cells = np.divide((a - n_a * share) ** 2, n_a * share, out=np.zeros_like(total), where=share > 0)
    cells += np.divide((b - n_b * share) ** 2, n_b * share, out=np.zeros_like(total), where=share > 0)
    return cells.sum(-1)


def permutation_chi2(a: Any, b: Any, n_permutations: int = 1999, seed: int = 0) -> tuple[float, float]:
    """Do two groups of units have the same law? A permutation test on their pooled histograms → (stat, pvalue).

    a (n_a, K), b (n_b, K): one histogram row per independent unit (e.g. the character bigrams of one
    sampled text). Observations *inside* a unit may depend on each other, which breaks the
    chi-square law of :func:`two_sample_chi2` on the summed histograms (a text that drifts into code
    brings many correlated bigrams: the statistic is overdispersed and rejects a true H0). Here the
    statistic is the same chi-square distance of the two summed histograms, but its null law comes
    from reassigning whole units to the groups at random, which is exact whenever the units are
    exchangeable under H0: pvalue = (1 + #{permuted stat ≥ observed}) / (1 + n_permutations).
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2 or x.shape[0] < 1 or np.any(x < 0) or not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: expected (units, cells) non-negative counts, got shape {x.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"b: expected {a.shape[1]} cells per unit (as in a), got {b.shape[1]}")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations: expected an int ≥ 1, got {n_permutations!r}")
    units = np.concatenate([a, b])                                           # (n, K)
    n_a = a.shape[0]
    observed = float(_chi2_distance(a.sum(0), b.sum(0)))
    units = units[:, units.sum(0) > 0]                                       # empty cells add nothing
    rng = np.random.default_rng(seed)
    as_large = 0
    for start in range(0, n_permutations, _PERMUTATION_CHUNK):               # bounded memory for wide K
        size = min(_PERMUTATION_CHUNK, n_permutations - start)
        in_a = np.argsort(rng.random((size, units.shape[0])), axis=1) < n_a  # random n_a-subsets of units
        sums_a = in_a.astype(np.float64) @ units                             # (size, K)
        as_large += int(np.sum(_chi2_distance(sums_a, units.sum(0) - sums_a) >= observed * (1 - 1e-12)))
    return observed, (1 + as_large) / (1 + n_permutations)
