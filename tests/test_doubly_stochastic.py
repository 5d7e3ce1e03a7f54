"""Section 01.5: doubly stochastic attention — Sinkhorn, QR (orthostochastic), unistochastic.

The NumPy float64 references are checked against first principles (row and column sums,
orthogonality, softmax at zero Sinkhorn sweeps), the batched PyTorch versions against the references,
the gradients against finite differences, and the exercise checker 01.5a against its solution, a stub
and typical mistakes.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import agree
from lib.attention.doubly_stochastic import (
    Modulated,
    Sinkhorn,
    dsm_residual,
    gram_schmidt_np,
    make_normalizer,
    qr_dsm,
    qr_dsm_np,
    qr_orthogonal,
    sinkhorn,
    sinkhorn_np,
    unistochastic,
    unistochastic_np,
    unitary_dsm,
)
from lib.exercises import get_exercise
from lib.exercises.registry import CheckFailed
from lib.testing import numpy64

FP64 = dict(atol=1e-12, rtol=1e-10, reason="float64 vs float64: the same map, different rounding order")
FP32 = dict(atol=1e-5, rtol=1e-4, reason="float32 QR / eigh / logsumexp vs the float64 reference (n ≤ 64)")
DSM_FP32 = 1e-5   # |row or column sum − 1| in float32: n ≤ 64 terms of size ≤ 1, eps 1.2e-7 each
SHAPES = [(2, 3, 16, 16), (1, 1, 17, 17), (5, 1, 1), (4, 64, 64)]   # batched, awkward n, n = 1, larger n


def logits(shape, seed=0, dtype=torch.float32):
    """Standard normal logits: nonsingular and without repeated eigenvalues with probability 1."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).to(dtype)


def thetas(n, seed=1, dtype=torch.float32):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 2, (n, n))).to(dtype)


# ----------------------------------------------------------------------------- NumPy references


def test_sinkhorn_with_zero_sweeps_is_softmax():
    S = logits((3, 9, 9), dtype=torch.float64)
    agree("sinkhorn_np(S, 0) = softmax", sinkhorn_np(S.numpy(), 0), torch.softmax(S, -1), **FP64)


def test_sinkhorn_residual_decreases_with_iterations():
    S = 2 * logits((4, 16, 16), dtype=torch.float64).numpy()
    residuals = [dsm_residual(sinkhorn_np(S, k)) for k in (0, 1, 2, 3, 5, 10, 30)]
    assert all(later < earlier for earlier, later in zip(residuals, residuals[1:])), residuals
    assert residuals[0] > 0.1 and residuals[-1] < 1e-6
    rows = sinkhorn_np(S, 3).sum(axis=-1)
    np.testing.assert_allclose(rows, 1.0, atol=1e-14)     # the last normalization (rows) is exact


def test_gram_schmidt_is_a_qr_with_nonnegative_diagonal():
    S = logits((11, 11), dtype=torch.float64).numpy()
    Q, R = gram_schmidt_np(S)
    agree("Q R = S", Q @ R, S, **FP64)
    agree("QᵀQ = I", Q.T @ Q, np.eye(11), **FP64)
    assert np.all(np.tril(R, -1) == 0) and np.all(np.diag(R) > 0)


@pytest.mark.parametrize("name, dsm", [("qr", qr_dsm_np), ("unistochastic", unistochastic_np)])
def test_references_are_exactly_doubly_stochastic(name, dsm):
    A = dsm(logits((3, 13, 13), dtype=torch.float64).numpy())
    assert dsm_residual(A) < 1e-13, name
    assert A.min() >= 0, name


def test_dsm_residual_measures_row_and_column_sums():
    assert dsm_residual(np.eye(4)) == 0.0
    A = np.full((3, 3), 1 / 3)
    A[0, 0] += 0.25                                             # row 0 and column 0 now sum to 1.25
    assert dsm_residual(A) == pytest.approx(0.25)
    assert dsm_residual(torch.eye(3)) == 0.0


# ----------------------------------------------------------------------------- PyTorch vs references


@pytest.mark.parametrize("shape", SHAPES)
def test_sinkhorn_matches_reference(shape):
    S = 3 * logits(shape)
    for n_iter in (0, 1, 3):
        agree(f"sinkhorn {shape} n_iter={n_iter}", sinkhorn(S, n_iter), sinkhorn_np(numpy64(S), n_iter), **FP32)


def test_sinkhorn_survives_large_and_masked_logits():
    S = 30 * logits((2, 8, 8), dtype=torch.float64)
    agree("sinkhorn at logits of size ~30", sinkhorn(S, 3), sinkhorn_np(S.numpy(), 3), atol=1e-12, rtol=1e-8,
          reason="float64; log domain vs exp domain, entries down to e^-100 carry relative rounding ~1e-13")
    A = sinkhorn(1e4 * S, 3)      # the exp-domain reference underflows to 0/0 here; the log domain does not
    assert torch.isfinite(A).all()
    torch.testing.assert_close(A.sum(-1), torch.ones(2, 8, dtype=torch.float64), atol=1e-12, rtol=0)
    causal = torch.full((6, 6), float("-inf")).triu(1) + logits((6, 6))
    A = sinkhorn(causal, 3)
    assert torch.isfinite(A).all() and torch.all(A.triu(1) == 0)


@pytest.mark.parametrize("shape", SHAPES)
def test_qr_matches_gram_schmidt_and_is_doubly_stochastic(shape):
    S = logits(shape)
    Q_ref = np.stack([gram_schmidt_np(s)[0] for s in numpy64(S).reshape(-1, *shape[-2:])]).reshape(shape)
    agree(f"qr_orthogonal {shape} (signs fixed)", qr_orthogonal(S), Q_ref, atol=1e-4, rtol=1e-4,
          reason="float32 Householder QR vs float64 Gram–Schmidt; Q's error grows with cond(S) ≈ n for Gaussian S")
    A = qr_dsm(S)
    agree(f"qr_dsm {shape}", A, Q_ref**2, **FP32)
    assert dsm_residual(A) <= DSM_FP32 and A.min() >= 0


def test_qr_dsm_does_not_depend_on_column_signs():
    S = logits((12, 12), dtype=torch.float64)
    Q, _ = torch.linalg.qr(S)
    flips = torch.tensor([1.0, -1.0] * 6, dtype=torch.float64)
    agree("(Q·D) ∘ (Q·D) = Q ∘ Q", (Q * flips) ** 2, qr_dsm(S), **FP64)


@pytest.mark.parametrize("shape", SHAPES)
def test_unistochastic_matches_reference_and_is_doubly_stochastic(shape):
    S, theta = logits(shape), thetas(shape[-1])
    A = unistochastic(S, theta)
    agree(f"unistochastic {shape}", A, unistochastic_np(numpy64(S), numpy64(theta)), **FP32)
    assert dsm_residual(A) <= DSM_FP32 and A.min() >= 0


def test_unistochastic_theta_of_full_shape_and_float():
    S = logits((2, 5, 5), dtype=torch.float64)
    theta = thetas(5, dtype=torch.float64).expand(2, 5, 5)
    agree("θ (n, n) = θ broadcast to S's shape", unistochastic(S, theta), unistochastic(S, theta[0]), **FP64)
    agree("θ = 0.5 as a float", unistochastic(S, 0.5), unistochastic_np(S.numpy(), 0.5), **FP64)


def test_non_contiguous_input():
    S = logits((2, 12, 12)).transpose(-1, -2)
    assert not S.is_contiguous()
    agree("sinkhorn, transposed view", sinkhorn(S, 3), sinkhorn_np(numpy64(S), 3), **FP32)
    agree("qr_dsm, transposed view", qr_dsm(S), qr_dsm_np(numpy64(S)), **FP32)
    agree("unistochastic, transposed view", unistochastic(S), unistochastic_np(numpy64(S)), **FP32)


# ----------------------------------------------------------------------------- gradients


def test_gradients_match_finite_differences():
    S = logits((2, 6, 6), seed=3, dtype=torch.float64).requires_grad_()
    theta = thetas(6, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: sinkhorn(s, 3), (S,))
    assert torch.autograd.gradcheck(qr_dsm, (S,))
    assert torch.autograd.gradcheck(unistochastic, (S, theta))


def test_unitary_dsm_gradient_is_finite_at_repeated_eigenvalues():
    # H = I has one eigenvalue n times: autograd through eigh's eigenvectors would divide by 0.
    weights = torch.arange(25.0, dtype=torch.float64).view(5, 5)
    for M in (torch.eye(5, dtype=torch.float64), torch.zeros(5, 5, dtype=torch.float64)):
        M = M.requires_grad_()
        assert torch.autograd.gradcheck(lambda m: unitary_dsm(m) * weights, (M,))


# ----------------------------------------------------------------------------- normalizers


def test_normalizers_in_the_encoder_shape():
    S = logits((2, 4, 16, 16))
    assert make_normalizer("softmax", 16) is None
    for name in ("sinkhorn", "qr", "unistochastic"):
        torch.manual_seed(0)
        normalize = make_normalizer(name, 16)
        A = normalize(S)
        assert A.shape == S.shape and A.min() >= 0
        rows_only = name == "sinkhorn"
        assert (dsm_residual(A) < 0.5) if rows_only else (dsm_residual(A) <= DSM_FP32)
        params = list(normalize.parameters())
        assert len(params) == (0 if rows_only else 1)
        if params:
            (A * S).sum().backward()
            assert params[0].grad is not None and torch.isfinite(params[0].grad).all()


def test_modulated_uses_a_corner_of_theta_for_shorter_inputs():
    torch.manual_seed(0)
    normalize = Modulated(8, qr_dsm)
    S = logits((3, 5, 5))
    agree("Modulated on 5 of 8 tokens", normalize(S), qr_dsm(normalize.theta[:5, :5] * S), **FP32)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: sinkhorn(torch.zeros(3, 4), 3), ValueError, r"^S: expected shape \(\.\.\., n, n\)"),
        (lambda: sinkhorn(torch.zeros(4, dtype=torch.float32), 3), ValueError, "^S: "),
        (lambda: sinkhorn(torch.zeros(3, 3, dtype=torch.long), 3), TypeError, "^S: expected a floating"),
        (lambda: sinkhorn(np.zeros((3, 3)), 3), TypeError, "^S: expected a torch.Tensor"),
        (lambda: sinkhorn(torch.zeros(3, 3), -1), ValueError, "^n_iter: "),
        (lambda: sinkhorn(torch.zeros(3, 3), 2.0), ValueError, "^n_iter: "),
        (lambda: qr_dsm(torch.zeros(3, 3, dtype=torch.float16)), TypeError, "^S: expected one of float32, float64"),
        (lambda: unistochastic(torch.zeros(2, 3, 3), torch.ones(4, 4)), ValueError, r"^theta: expected shape \(3, 3\)"),
        (lambda: unistochastic(torch.zeros(3, 3), "1"), TypeError, "^theta: "),
        (lambda: sinkhorn_np(np.zeros((3, 4)), 1), ValueError, "^S: "),
        (lambda: sinkhorn_np(torch.zeros(3, 3), 1), TypeError, "^S: expected a numpy.ndarray"),
        (lambda: gram_schmidt_np(np.ones((3, 3))), ValueError, "^S: expected a nonsingular matrix"),
        (lambda: gram_schmidt_np(np.ones((2, 3, 3))), ValueError, r"^S: expected one \(n, n\) matrix"),
        (lambda: unistochastic_np(np.zeros((3, 3)), np.ones((2, 2))), ValueError, "^theta: "),
        (lambda: dsm_residual(np.zeros(3)), ValueError, "^A: "),
        (lambda: make_normalizer("sparsemax", 16), ValueError, "^name: expected one of"),
        (lambda: Modulated(0, qr_dsm), ValueError, "^n_tokens: "),
        (lambda: Modulated(4, "qr"), TypeError, "^dsm: "),
        (lambda: Modulated(4, qr_dsm)(torch.zeros(1, 5, 5)), ValueError, "^logits: expected at most 4"),
        (lambda: Sinkhorn(-2), ValueError, "^n_iter: "),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- exercise 01.5a


def qr_doubly_stochastic_solution():
    """The solution function of the chapter's master, ``solutions/01_attention.py``."""
    source = (Path(__file__).parents[1] / "solutions" / "01_attention.py").read_text(encoding="utf-8")
    match = re.search(r"^def qr_doubly_stochastic\(.*?# END SOLUTION\n", source, flags=re.S | re.M)
    namespace = {"np": np}
    exec(match.group(0), namespace)
    return namespace["qr_doubly_stochastic"]


def test_checker_passes_on_the_solution():
    checker = get_exercise("01.5a").checker
    assert checker(qr_doubly_stochastic_solution()) >= 5


def test_checker_lets_the_stub_error_through():
    def stub(S):
        raise NotImplementedError("Exercise 01.5a: write qr_doubly_stochastic")

    with pytest.raises(NotImplementedError):
        get_exercise("01.5a").checker(stub)


@pytest.mark.parametrize(
    "mistake, message",
    [
        (lambda S: np.linalg.qr(S)[0], "negative"),                                   # Q, not Q ∘ Q
        (lambda S: np.abs(np.linalg.qr(S)[0]), "row sums"),                           # |Q|, not squared
        (lambda S: np.linalg.qr(np.swapaxes(S, -1, -2))[0] ** 2, "disagrees"),        # QR of Sᵀ: a DSM, not this one
        (lambda S: sinkhorn_np(S, 0), "column sums"),                                 # softmax: rows only
        (lambda S: np.linalg.qr(S[..., :, :])[0].astype(np.float32) ** 2, "float64"),  # lost precision
    ],
)
def test_checker_catches_typical_mistakes(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        get_exercise("01.5a").checker(mistake)
