"""lib.stats: p-values against known values (SciPy's, quoted) and Monte Carlo; tests' size and power."""

import math

import numpy as np
import pytest

from lib.stats import (
    beta_inc,
    chi2_pooled,
    chi2_sf,
    gamma_inc_upper,
    permutation_chi2,
    pool_sparse_cells,
    student_t_sf2,
    two_sample_chi2,
    welch_t,
)

RTOL = dict(rtol=1e-9, atol=0)  # series/continued fractions converge to ~1e-15 relative; quoted values have 10+ digits


@pytest.mark.parametrize("stat, dof, expected", [
    (3.841458820694124, 1, 0.05),        # the 95 % quantile of χ²_1
    (18.307038053275146, 10, 0.05),      # of χ²_10
    (6.6348966010212145, 1, 0.01),
    (2.0, 2, math.exp(-1.0)),            # χ²_2 is exponential with mean 2: P(> s) = e^{−s/2}
    (0.0, 5, 1.0),
])
def test_chi2_sf_known_values(stat, dof, expected):
    np.testing.assert_allclose(chi2_sf(stat, dof), expected, **RTOL)


def test_gamma_and_beta_identities():
    np.testing.assert_allclose(gamma_inc_upper(1.0, 3.0), math.exp(-3.0), **RTOL)  # Q(1, x) = e^{−x}
    np.testing.assert_allclose(gamma_inc_upper(0.5, 2.0), math.erfc(math.sqrt(2.0)), **RTOL)  # Q(1/2, x) = erfc √x
    np.testing.assert_allclose(beta_inc(2, 3, 0.4), 0.5248, **RTOL)  # Σ_{j≥2} C(4, j) 0.4^j 0.6^{4−j}
    np.testing.assert_allclose(beta_inc(0.5, 0.5, 0.3), 2 / math.pi * math.asin(math.sqrt(0.3)), **RTOL)  # arcsine law
    np.testing.assert_allclose(beta_inc(3, 7, 0.9) + beta_inc(7, 3, 0.1), 1.0, **RTOL)  # symmetry


@pytest.mark.parametrize("t, dof, expected", [
    (2.2281388519649385, 10, 0.05),     # the 97.5 % quantile of t_10
    (1.0, 1, 0.5),                      # Cauchy: P(|T| > 1) = 1/2
    (1.959963984540054, 1e7, 0.05),     # t_∞ is normal (t_1e7 differs by ~6e-7 relative)
    (0.0, 3, 1.0),
])
def test_student_t_known_values(t, dof, expected):
    np.testing.assert_allclose(student_t_sf2(t, dof), expected, rtol=1e-5, atol=0)  # dof 1e7 vs the normal limit: ~6e-7 relative


def null_rejection_rate(pvalues: list[float], level: float) -> float:
    return float(np.mean(np.asarray(pvalues) < level))


def test_tests_hold_their_size_under_the_null():
    """Under H0 a p-value is uniform: about 10 % fall below 0.1 (binomial sd with 1500 draws: 0.8 %)."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(20, 0.3))  # many sparse cells: pooling must keep the χ² approximation honest
    rates = [
        null_rejection_rate([chi2_pooled(rng.multinomial(400, p), p)[2] for _ in range(1500)], 0.1),
        null_rejection_rate([two_sample_chi2(rng.multinomial(300, p), rng.multinomial(600, p))[2] for _ in range(1500)], 0.1),
        null_rejection_rate([welch_t(rng.normal(0, 1, 15), rng.normal(0, 3, 40))[2] for _ in range(1500)], 0.1),
    ]
    np.testing.assert_allclose(rates, 0.1, atol=0.03)  # ±3.7 binomial sd plus the χ² approximation's error


def test_tests_have_power():
    rng = np.random.default_rng(1)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    assert chi2_pooled(rng.multinomial(5000, [0.35, 0.35, 0.2, 0.1]), p)[2] < 1e-6
    assert two_sample_chi2(rng.multinomial(5000, p), rng.multinomial(5000, [0.35, 0.35, 0.2, 0.1]))[2] < 1e-6
    assert welch_t(rng.normal(0, 1, 2000), rng.normal(0.3, 1, 2000))[2] < 1e-6


def test_impossible_cell_rejects_outright():
    assert chi2_pooled([0, 3, 1], [0.5, 0.5, 0.0]) == (math.inf, 1, 0.0)


def test_pooling_merges_sparse_cells_until_the_threshold():
    labels = pool_sparse_cells(np.array([100.0, 1.0, 2.0, 50.0, 3.0]), 5.0)
    assert len(set(labels)) == 3 and labels[1] == labels[2] == labels[4]  # 1 + 2 + 3 = 6 ≥ 5: one pool
    labels = pool_sparse_cells(np.array([100.0, 1.0, 2.0, 3.0]), 5.0)
    assert labels[1] == labels[2] == labels[3] and labels[0] != labels[1]
    labels = pool_sparse_cells(np.array([100.0, 1.0, 2.0, 50.0]), 5.0)
    assert labels[1] == labels[2] == labels[3] != labels[0]  # 3 < 5: the smallest dense cell joins
    stat, dof, _ = chi2_pooled([10, 0, 0, 10], [0.49, 0.01, 0.01, 0.49])
    assert dof == 1 and stat == pytest.approx(0.2**2 / 10.2 + 0.2**2 / 9.8)  # pools 0.2 + 0.2 + 9.8 vs 10


def test_bad_input():
    with pytest.raises(ValueError, match="probs"):
        chi2_pooled([1, 2], [0.5, 0.6])
    with pytest.raises(ValueError, match="probs"):
        chi2_pooled([1, 2], [1.0])
    with pytest.raises(ValueError, match="counts"):
        chi2_pooled([-1, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="min_expected"):
        chi2_pooled([1, 2], [0.5, 0.5], min_expected=0)
    with pytest.raises(ValueError, match="b"):
        two_sample_chi2([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="a"):
        welch_t([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="dof"):
        chi2_sf(1.0, 0)
    with pytest.raises(ValueError, match="x"):
        beta_inc(1, 1, 1.5)


# ----------------------------------------------------------------------------- permutation test


def clustered_units(rng: np.random.Generator, law: np.ndarray, n_units: int, per_unit: int) -> np.ndarray:
    """Histograms (n_units, K): each unit draws all its observations from its own Dirichlet-perturbed law."""
    return np.stack([rng.multinomial(per_unit, rng.dirichlet(20 * law)) for _ in range(n_units)])


def test_permutation_chi2_is_calibrated_where_the_plain_test_is_not():
    """Dependent observations inside units: at level 0.05 the plain chi-square on summed histograms
    rejects a true H0 far too often, the permutation test about 5 % of the time. 200 repetitions:
    a binomial(200, 0.05) count exceeds 20 with probability < 0.5 %."""
    rng = np.random.default_rng(0)
    law = rng.dirichlet(np.ones(12))
    plain = perm = 0
    for rep in range(200):
        a, b = clustered_units(rng, law, 30, 40), clustered_units(rng, law, 30, 40)
        plain += two_sample_chi2(a.sum(0), b.sum(0))[2] < 0.05
        perm += permutation_chi2(a, b, 199, seed=rep)[1] < 0.05
    assert perm <= 20
    assert plain >= 100  # overdispersion makes the plain test reject most true nulls


def test_permutation_chi2_has_power_and_its_floor():
    rng = np.random.default_rng(1)
    law = rng.dirichlet(np.ones(12))
    shifted = 0.8 * law + 0.2 * rng.dirichlet(np.ones(12))
    a, b = clustered_units(rng, law, 40, 40), clustered_units(rng, shifted, 40, 40)
    stat, p = permutation_chi2(a, b, 999)
    assert p == pytest.approx(1 / 1000)  # the smallest p-value 999 permutations can give
    assert stat == pytest.approx(_plain_stat(a.sum(0), b.sum(0)))


def _plain_stat(a: np.ndarray, b: np.ndarray) -> float:
    """The 2×K chi-square statistic by its textbook formula, empty cells skipped (the test's statistic)."""
    keep = (a + b) > 0
    a, b = a[keep].astype(float), b[keep].astype(float)
    share = (a + b) / (a.sum() + b.sum())
    return float(np.sum((a - a.sum() * share) ** 2 / (a.sum() * share) + (b - b.sum() * share) ** 2 / (b.sum() * share)))


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "match"),
    [
        (np.ones(4), np.ones((2, 4)), {}, "a: expected \\(units, cells\\)"),
        (np.ones((2, 4)), -np.ones((2, 4)), {}, "b: expected \\(units, cells\\)"),
        (np.ones((2, 4)), np.ones((2, 3)), {}, "b: expected 4 cells"),
        (np.ones((2, 4)), np.ones((2, 4)), {"n_permutations": 0}, "n_permutations"),
    ],
)
def test_permutation_chi2_bad_input(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        permutation_chi2(a, b, **kwargs)
