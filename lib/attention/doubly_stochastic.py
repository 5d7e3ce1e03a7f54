"""Section 01.5 — doubly stochastic attention: Sinkhorn, QR (orthostochastic) and unistochastic maps.

Born et al., "Quantum Doubly Stochastic Transformers", arXiv 2504.16275 (2025); the Sinkhorn baseline
is Sander et al., "Sinkformers", arXiv 2110.11773 (2022).

Softmax makes every *row* of the attention matrix sum to 1. A doubly stochastic matrix (DSM) has
rows and columns summing to 1 and non-negative entries. Three ways to map logits S (n × n) to one:

* **Sinkhorn** (Sinkformer): A = exp(S), then normalize rows and columns in turn. Only the last
  normalization holds exactly; the other converges as the iterations go on.
* **QR** (the paper's quantum-inspired classical variant): S = Q R with Q orthogonal, A = Q ∘ Q.
  The rows and columns of an orthogonal matrix are unit vectors, so A is exactly doubly stochastic
  (an *orthostochastic* matrix). The signs of Q's columns are not unique; A does not see them.
* **Unistochastic** (the book's classical stand-in for the paper's QontOT circuit): H = sym(θ ∘ S)
  is real symmetric, U = exp(iH) is unitary, A = |U|² (entrywise squared modulus) is exactly doubly
  stochastic. QontOT produces matrices of the same form, |U|² for a circuit unitary U whose angles
  are θ ∘ S; here U is the exponential of a Hermitian matrix, not a circuit.

NumPy float64 references (loops where they teach): :func:`sinkhorn_np`, :func:`gram_schmidt_np`,
:func:`qr_dsm_np`, :func:`unistochastic_np`, :func:`dsm_residual`. Batched PyTorch over (..., n, n):
:func:`sinkhorn` (log domain), :func:`qr_orthogonal` / :func:`qr_dsm` (``torch.linalg.qr``),
:func:`unistochastic` (``torch.linalg.eigh``, with a backward built from divided differences that
stays finite when eigenvalues coincide). :func:`make_normalizer` builds the ``normalize=`` argument
of :class:`lib.models.tiny_encoder.SelfAttention`; the QR and unistochastic ones carry a learnable
θ (:class:`Modulated`). There is no Triton kernel: each map needs the whole n × n matrix (column
sums, a QR factorization, an eigendecomposition), so 01.1's streaming over key tiles cannot apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import numpy as np
import torch
from torch import nn

from lib.validation import check_choice, check_dtype, check_int_in_range, check_positive_int, check_tensor

__all__ = [
    "NORMALIZERS",
    "CosSinSymmetric",
    "Modulated",
    "Sinkhorn",
    "dsm_residual",
    "gram_schmidt_np",
    "make_normalizer",
    "qr_dsm",
    "qr_dsm_np",
    "qr_orthogonal",
    "sinkhorn",
    "sinkhorn_np",
    "unistochastic",
    "unistochastic_np",
    "unitary_dsm",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

NORMALIZERS = ("softmax", "sinkhorn", "qr", "unistochastic")
"""The attention normalizers :func:`make_normalizer` knows, in the order the notebook compares them."""

_MAX_ITER = 100_000
_LINALG_DTYPES = (torch.float32, torch.float64)  # what torch.linalg.qr / eigh accept on every device


# ----------------------------------------------------------------------------- argument checks


def _check_square_np(name: str, S: np.ndarray) -> None:
    """Raise unless ``S`` is a real float NumPy array of shape (..., n, n) with n ≥ 1."""
    if not isinstance(S, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(S).__name__}")
    if not np.issubdtype(S.dtype, np.floating):
        raise TypeError(f"{name}: expected a real floating array, got {S.dtype}")
    if S.ndim < 2 or S.shape[-1] != S.shape[-2] or S.shape[-1] == 0:
        raise ValueError(f"{name}: expected shape (..., n, n) with n ≥ 1, got {S.shape}")


def _check_square(name: str, S: torch.Tensor, dtypes: tuple[torch.dtype, ...] | None = None) -> None:
    """Raise unless ``S`` is a floating tensor of shape (..., n, n) with n ≥ 1 (and of ``dtypes``)."""
    check_tensor(name, S)
    if not S.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {S.dtype}")
    if dtypes is not None:
        check_dtype(name, S, dtypes)
    if S.ndim < 2 or S.shape[-1] != S.shape[-2] or S.shape[-1] == 0:
        raise ValueError(f"{name}: expected shape (..., n, n) with n ≥ 1, got {tuple(S.shape)}")


def _check_theta(theta: ArrayLike, S: ArrayLike) -> None:
    """Raise unless ``theta`` has the shape of ``S`` or of a suffix of it, e.g. (n, n) for S (B, H, n, n)."""
    if theta.ndim > S.ndim or tuple(theta.shape) != tuple(S.shape)[S.ndim - theta.ndim:]:
        raise ValueError(
            f"theta: expected shape {tuple(S.shape[-2:])} or {tuple(S.shape)} (like S), got {tuple(theta.shape)}"
        )


# ----------------------------------------------------------------------------- NumPy references


def _per_matrix(fn: Callable[[np.ndarray], np.ndarray], S: np.ndarray) -> np.ndarray:
    """Apply ``fn`` (n, n) → (n, n) to every matrix of a (..., n, n) stack."""
    out = np.empty_like(S, dtype=np.float64)
    for index in np.ndindex(S.shape[:-2]):
        out[index] = fn(S[index])
    return out


def sinkhorn_np(S: np.ndarray, n_iter: int) -> np.ndarray:
    """Sinkhorn's algorithm on exp(S): softmax over rows, then ``n_iter`` sweeps of (columns, rows).

    S: (..., n, n) logits → A: (..., n, n), float64. A⁰ = row-normalized exp(S) (that is softmax, so
    ``n_iter = 0`` returns softmax); each sweep divides every column by its sum, then every row by
    its sum. Rows sum to 1 exactly after every sweep, columns only in the limit n_iter → ∞.
    """
    _check_square_np("S", S)
    check_int_in_range("n_iter", n_iter, 0, _MAX_ITER)
    S = S.astype(np.float64)
    A = np.exp(S - S.max(axis=(-2, -1), keepdims=True))  # one shift per matrix: exp never overflows
    A = A / A.sum(axis=-1, keepdims=True)                # rows: this is softmax(S)
    for _ in range(n_iter):
        A = A / A.sum(axis=-2, keepdims=True)            # columns sum to 1 ...
        A = A / A.sum(axis=-1, keepdims=True)            # ... then rows, which moves the columns again
    return A


def gram_schmidt_np(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """QR by (modified) Gram–Schmidt: S = Q R, Q orthogonal, R upper triangular with diag(R) > 0.

    S: (n, n) nonsingular float → (Q, R), each (n, n) float64. Column j of Q is column j of S minus
    its components along q_0 … q_{j-1}, divided by the norm that is left, which becomes R[j, j] ≥ 0:
    this fixes the one freedom of a QR factorization, the sign of each column of Q.
    """
    _check_square_np("S", S)
    if S.ndim != 2:
        raise ValueError(f"S: expected one (n, n) matrix, got shape {S.shape}")
    n = S.shape[0]
    Q, R = np.zeros((n, n)), np.zeros((n, n))
    scale = np.linalg.norm(S)
    for j in range(n):
        v = S[:, j].astype(np.float64)
        for i in range(j):
            R[i, j] = Q[:, i] @ v          # component of what is left along q_i
            v = v - R[i, j] * Q[:, i]
        R[j, j] = np.linalg.norm(v)
        if not R[j, j] > 1e-12 * scale:
            raise ValueError(f"S: expected a nonsingular matrix, but column {j} lies in the span of columns 0..{j - 1}")
        Q[:, j] = v / R[j, j]
    return Q, R


def qr_dsm_np(S: np.ndarray) -> np.ndarray:
    """The orthostochastic map: A = Q ∘ Q for S = Q R (Gram–Schmidt, diag(R) > 0).

    S: (..., n, n) nonsingular → A: (..., n, n) float64, exactly doubly stochastic: the rows and the
    columns of an orthogonal Q are unit vectors, so Σ_j Q_ij² = Σ_i Q_ij² = 1, and Q_ij² ≥ 0.
    """
    _check_square_np("S", S)
    return _per_matrix(lambda s: gram_schmidt_np(s)[0] ** 2, S)


def unistochastic_np(S: np.ndarray, theta: np.ndarray | float = 1.0) -> np.ndarray:
    """The unistochastic map: H = sym(θ ∘ S), U = exp(iH), A = |U|² entrywise.

    S: (..., n, n); theta: a float or an array of S's shape or of a suffix of it → A: (..., n, n)
    float64. With H = V diag(λ) Vᵀ (eigh), U = V diag(e^{iλ}) Vᴴ is unitary, so its rows and columns
    are unit vectors of ℂⁿ and A = |U|² is exactly doubly stochastic.
    """
    _check_square_np("S", S)
    theta = np.asarray(theta, dtype=np.float64)
    _check_theta(theta, S)
    M = theta * S.astype(np.float64)
    H = (M + np.swapaxes(M, -1, -2)) / 2                          # (..., n, n) real symmetric
    lam, V = np.linalg.eigh(H)                                    # (..., n), (..., n, n)
    U = (V * np.exp(1j * lam)[..., None, :]) @ np.swapaxes(V, -1, -2).conj()
    return np.abs(U) ** 2


def dsm_residual(A: ArrayLike) -> float:
    """max over all rows and columns of |sum − 1|, computed in float64: 0 for a doubly stochastic A.

    A: (..., n, n) NumPy array or tensor (any float dtype; its values are summed exactly as stored).
    """
    a = A.detach().cpu().double().numpy() if isinstance(A, torch.Tensor) else np.asarray(A, dtype=np.float64)
    _check_square_np("A", a)
    rows, cols = np.abs(a.sum(axis=-1) - 1), np.abs(a.sum(axis=-2) - 1)
    return float(max(rows.max(), cols.max()))


# ----------------------------------------------------------------------------- PyTorch, batched


def sinkhorn(S: torch.Tensor, n_iter: int = 3) -> torch.Tensor:
    """Sinkhorn normalization in the log domain, batched: S (..., n, n) → A (..., n, n).

    log A⁰ = log_softmax(S) over rows; each of the ``n_iter`` sweeps subtracts the logsumexp of every
    column, then of every row. Same result as :func:`sinkhorn_np`, but exp is taken once at the end,
    so large logits neither overflow nor underflow into 0/0; −inf logits (masked entries) stay 0.
    """
    _check_square("S", S)
    check_int_in_range("n_iter", n_iter, 0, _MAX_ITER)
    log_a = torch.log_softmax(S, dim=-1)
    for _ in range(n_iter):
        log_a = log_a - torch.logsumexp(log_a, dim=-2, keepdim=True)   # columns
        log_a = log_a - torch.logsumexp(log_a, dim=-1, keepdim=True)   # rows
    return log_a.exp()


def qr_orthogonal(S: torch.Tensor) -> torch.Tensor:
    """The orthogonal factor of S = Q R with the sign convention diag(R) ≥ 0, batched.

    S: (..., n, n) float32/float64 → Q: (..., n, n). ``torch.linalg.qr`` (Householder) may return
    any column signs; multiplying column j of Q and row j of R by sign(R_jj) gives the unique
    factorization with a non-negative diagonal, the one Gram–Schmidt builds.
    """
    _check_square("S", S, _LINALG_DTYPES)
    Q, R = torch.linalg.qr(S)
    signs = torch.where(torch.diagonal(R, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(S.dtype)   # (..., n)
    return Q * signs[..., None, :]


def qr_dsm(S: torch.Tensor) -> torch.Tensor:
    """The orthostochastic map A = Q ∘ Q, S = Q R, batched: S (..., n, n) → A (..., n, n).

    Differentiable wherever S is nonsingular (``torch.linalg.qr``'s backward solves with R).
    The column signs of Q cancel in Q ∘ Q, so the sign fix of :func:`qr_orthogonal` changes nothing
    here; it is there so that Q itself can be compared with :func:`gram_schmidt_np`.
    """
    return qr_orthogonal(S).square()


class CosSinSymmetric(torch.autograd.Function):
    """(cos H, sin H) of a real symmetric H (..., n, n): the real and imaginary parts of U = exp(iH).

    Forward: H = V diag(λ) Vᵀ, cos H = V diag(cos λ) Vᵀ, sin H = V diag(sin λ) Vᵀ.
    Backward (Daleckii–Krein): for a matrix function f, df(H) = V (F ∘ (Vᵀ dH V)) Vᵀ with the divided
    differences F_ij = (f(λ_i) − f(λ_j)) / (λ_i − λ_j). With m = (λ_i + λ_j)/2, h = (λ_i − λ_j)/2:
    F_cos = −sin(m)·sinc(h) and F_sin = cos(m)·sinc(h), sinc(h) = sin(h)/h, which is 1 at h = 0:
    finite and exact for equal eigenvalues, where autograd through eigh's eigenvectors divides by 0.
    """

    @staticmethod
    def forward(ctx, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam, V = torch.linalg.eigh(H)
        ctx.save_for_backward(lam, V)
        Vt = V.transpose(-1, -2)
        return (V * torch.cos(lam)[..., None, :]) @ Vt, (V * torch.sin(lam)[..., None, :]) @ Vt

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_cos: torch.Tensor, grad_sin: torch.Tensor) -> torch.Tensor:
        lam, V = ctx.saved_tensors
        mid = (lam[..., :, None] + lam[..., None, :]) / 2
        half_gap = (lam[..., :, None] - lam[..., None, :]) / 2
        sinc = torch.sinc(half_gap / torch.pi)                   # torch.sinc(x) = sin(πx)/(πx)
        Vt = V.transpose(-1, -2)
        inner = -torch.sin(mid) * sinc * (Vt @ grad_cos @ V) + torch.cos(mid) * sinc * (Vt @ grad_sin @ V)
        grad = V @ inner @ Vt
        return (grad + grad.transpose(-1, -2)) / 2               # H is symmetric: so is its gradient


def unitary_dsm(M: torch.Tensor) -> torch.Tensor:
    """A = |exp(i·sym(M))|², batched: M (..., n, n) float32/float64 → A (..., n, n), exactly doubly stochastic.

    U = exp(iH) = cos H + i sin H for real symmetric H = (M + Mᵀ)/2, so |U_jk|² = (cos H)_jk² + (sin H)_jk²:
    the complex unitary is never formed, only its two real parts (one ``eigh``, see
    :class:`CosSinSymmetric` for the backward).
    """
    _check_square("M", M, _LINALG_DTYPES)
    cos_h, sin_h = CosSinSymmetric.apply((M + M.transpose(-1, -2)) / 2)
    return cos_h.square() + sin_h.square()


def unistochastic(S: torch.Tensor, theta: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The unistochastic map A = |exp(i·sym(θ ∘ S))|², batched; the PyTorch twin of :func:`unistochastic_np`.

    S: (..., n, n) float32/float64; theta: a float or a tensor of S's shape or of a suffix of it,
    e.g. (n, n) shared by every batch and head → A: (..., n, n). Differentiable in S and θ.
    """
    _check_square("S", S, _LINALG_DTYPES)
    if isinstance(theta, torch.Tensor):
        _check_theta(theta, S)
    elif isinstance(theta, bool) or not isinstance(theta, (int, float)):
        raise TypeError(f"theta: expected a float or a tensor, got {type(theta).__name__}")
    return unitary_dsm(theta * S)


# ----------------------------------------------------------------------------- attention normalizers


class Sinkhorn(nn.Module):
    """Sinkhorn as ``normalize=`` of SelfAttention: logits S (B, H, N, N) → sinkhorn(S, n_iter)."""

    def __init__(self, n_iter: int = 3) -> None:
        super().__init__()
        check_int_in_range("n_iter", n_iter, 0, _MAX_ITER)
        self.n_iter = n_iter

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return sinkhorn(logits, self.n_iter)

    def extra_repr(self) -> str:
        return f"n_iter={self.n_iter}"


class Modulated(nn.Module):
    """``normalize=`` with a learnable modulation: logits S (B, H, N, N) → dsm(θ[:N, :N] ∘ S).

    θ (n_tokens, n_tokens) is shared by the heads of one layer, like the angles of one QontOT
    circuit, whose data injection is the same f(θ, S) = θ ∘ S. Its entries start uniform in [0, 2]
    (mean 1, so θ ∘ S starts near S). The noise matters for QR: S = Q Kᵀ/√d_h has rank ≤ d_h, below
    N in a small model (8 < 16 in the notebook), and the QR of a singular matrix leaves columns of Q
    undetermined, with R⁻¹ in the backward; θ ∘ S with a random θ is nonsingular.
    """

    def __init__(self, n_tokens: int, dsm: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        check_positive_int("n_tokens", n_tokens)
        if not callable(dsm):
            raise TypeError(f"dsm: expected a callable (..., n, n) -> (..., n, n), got {type(dsm).__name__}")
        self.dsm = dsm
        self.theta = nn.Parameter(2 * torch.rand(n_tokens, n_tokens))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        n = logits.shape[-1]
        if n > self.theta.shape[0]:
            raise ValueError(f"logits: expected at most {self.theta.shape[0]} tokens (n_tokens), got {n}")
        return self.dsm(self.theta[:n, :n] * logits)

    def extra_repr(self) -> str:
        return f"n_tokens={self.theta.shape[0]}, dsm={getattr(self.dsm, '__name__', self.dsm)}"


def make_normalizer(name: str, n_tokens: int, n_iter: int = 3) -> nn.Module | None:
    """The ``normalize=`` argument of SelfAttention for one of :data:`NORMALIZERS`.

    "softmax" → None (SelfAttention's own softmax path); "sinkhorn" → :class:`Sinkhorn` (``n_iter``
    sweeps); "qr" → :class:`Modulated` with :func:`qr_dsm`; "unistochastic" → :class:`Modulated` with
    :func:`unitary_dsm`, i.e. the unistochastic map with a learnable θ. Each call makes a fresh module,
    so every layer gets its own θ.
    """
    check_choice("name", name, NORMALIZERS)
    check_positive_int("n_tokens", n_tokens)
    builders: dict[str, Callable[[], nn.Module | None]] = {
        "softmax": lambda: None,
        "sinkhorn": lambda: Sinkhorn(n_iter),
        "qr": lambda: Modulated(n_tokens, qr_dsm),
        "unistochastic": lambda: Modulated(n_tokens, unitary_dsm),
    }
    return builders[name]()
