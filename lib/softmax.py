"""Section 00.1 — softmax, from a NumPy reference to a fused kernel.

    softmax(x)_j = exp(x_j - m) / sum_k exp(x_k - m),   m = max_k x_k

Subtracting the row maximum ``m`` changes nothing mathematically and keeps every exponent ≤ 0,
so nothing overflows. A row whose entries are all ``-inf`` (a fully masked row) has no
distribution; the book returns zeros for it, as FlashAttention does, rather than NaN.

The backward pass of ``y = softmax(x)`` for an upstream gradient ``dy`` is

    dx = y * (dy - sum_k y_k dy_k)

Three implementations, each tested against the one before:

* :func:`reference_softmax` — NumPy, float64, the ground truth.
* :func:`softmax_torch` — plain PyTorch, one whole-tensor operation per step (the CPU path).
* ``kernels.softmax`` — one fused Triton kernel per direction (the CUDA path).

:func:`softmax` is the function the rest of the book calls: it validates its input, dispatches on
the device and is differentiable.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from lib.device import use_kernel
from lib.validation import check_floating_tensor, check_same_shape

__all__ = [
    "KERNEL_DTYPES",
    "SoftmaxFunction",
    "compute_dtype",
    "kernel_applies",
    "over_rows",
    "reference_softmax",
    "reference_softmax_backward",
    "safe_normalizer",
    "sample_logits",
    "safe_shift",
    "softmax",
    "softmax_backward",
    "softmax_backward_torch",
    "softmax_torch",
    "with_softmax_backward",
]

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
"""Dtypes the Triton kernels load and store (they compute in float32); float64 stays on PyTorch."""


# ----------------------------------------------------------------------------- NumPy reference


def reference_softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis in float64.

    x: (..., n) any real dtype, ``-inf`` allowed  →  (..., n) float64; all-``-inf`` rows give zeros.
    """
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)                # (..., 1) row maximum
    m = np.where(np.isneginf(m), 0.0, m)                 # fully masked row: any finite shift works
    e = np.exp(x - m)                                    # (..., n), every exponent ≤ 0
    s = np.sum(e, axis=-1, keepdims=True)                # (..., 1) normaliser
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


def reference_softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Vector-Jacobian product of softmax over the last axis, in float64.

    y: (..., n) softmax output, dy: (..., n) upstream gradient  →  dx: (..., n) = y ∘ (dy − ⟨y, dy⟩).
    """
    y = np.asarray(y, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    check_same_shape("dy", dy, "y", y)
    return y * (dy - np.sum(y * dy, axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- shared machinery


def safe_shift(m: torch.Tensor) -> torch.Tensor:
    """The shift used in exponents: the running maximum ``m``, or 0 where ``m = -inf`` (nothing seen).

    With it ``exp(x - shift)`` is 0, not NaN, for a row of ``-inf``.
    """
    return torch.where(torch.isneginf(m), torch.zeros_like(m), m)


def safe_normalizer(s: torch.Tensor) -> torch.Tensor:
    """The divisor of the normalisation: ``s``, or 1 where ``s = 0`` (every numerator is then 0 too)."""
    return torch.where(s == 0, torch.ones_like(s), s)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, float64 stays float64: the precision the arithmetic runs in."""
    return torch.promote_types(dtype, torch.float32)


def over_rows(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, dim: int) -> torch.Tensor:
    """Apply a row-wise ``fn`` — (rows, n) tensors → (rows, n) — along axis ``dim`` of (…, n, …) tensors.

    ``dim`` is moved last and the other axes are flattened into rows (a view when the layout allows,
    otherwise a copy); the result is moved back, so it has the input's shape.
    """
    moved = [t.movedim(dim, -1) for t in tensors]
    shape = moved[0].shape
    out = fn(*(t.reshape(-1, shape[-1]) for t in moved))
    return out.reshape(shape).movedim(-1, dim)


def kernel_applies(*tensors: torch.Tensor) -> bool:
    """The dispatch rule: CUDA tensors in a dtype the kernels store go to Triton."""
    return use_kernel(*tensors) and all(t.dtype in KERNEL_DTYPES for t in tensors)


def sample_logits(
    rows: int, n: int, *, seed: int = 0, dtype: torch.dtype = torch.float32, special_rows: bool = True
) -> torch.Tensor:
    """Seeded test logits (rows, n) drawn from N(0, 3²), the inputs every softmax check runs on.

    With ``special_rows`` the first rows are the cases that break a careless softmax (as many as
    ``rows`` allows): row 0 is all ``-inf`` (a fully masked row), row 1 has its first half ``-inf``
    (a partly masked row), row 2 holds logits of size ±1e4 (exp overflows unless the max is subtracted).
    """
    g = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn(rows, n, generator=g, dtype=torch.float64)
    if special_rows:
        x[0:1] = float("-inf")
        x[1:2, : (n + 1) // 2] = float("-inf")
        x[2:3] = 1e4 * torch.sign(x[2:3]) + x[2:3]
    return x.to(dtype)


# ----------------------------------------------------------------------------- PyTorch path


def softmax_torch(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Stable softmax along ``dim`` as plain PyTorch operations; all-``-inf`` rows give zeros.

    x: (..., n, ...) floating  →  same shape and dtype; half types are computed in float32.

        m = max_k x_k  (0 if the row is all -inf),   e = exp(x - m),   y = e / sum_k e_k

    Every operation below is a separate pass over memory: ``amax`` reads x; ``x - m`` reads x and
    writes a temporary; ``exp`` reads and writes; ``sum`` reads; the division reads and writes.
    That is 5 reads and 3 writes per element, against 1 read and 1 write for the fused kernel.
    """
    xc = x.to(compute_dtype(x.dtype))
    m = safe_shift(xc.amax(dim=dim, keepdim=True))             # (..., 1, ...)
    e = torch.exp(xc - m)                                       # every exponent ≤ 0
    return (e / safe_normalizer(e.sum(dim=dim, keepdim=True))).to(x.dtype)


def softmax_backward_torch(y: torch.Tensor, dy: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Vector-Jacobian product of softmax along ``dim`` in plain PyTorch.

    y: softmax output, dy: upstream gradient, both (..., n, ...)  →  dx = y ∘ (dy − ⟨y, dy⟩),
    in y's dtype (half types computed in float32).
    """
    compute = compute_dtype(y.dtype)
    yc, dyc = y.to(compute), dy.to(compute)
    return (yc * (dyc - (yc * dyc).sum(dim=dim, keepdim=True))).to(y.dtype)


# ----------------------------------------------------------------------------- dispatch + autograd


def _softmax_kernel_rows(x: torch.Tensor) -> torch.Tensor:
    """(rows, n) → (rows, n) on CUDA: the fused kernel, or the streaming kernel of 00.2 for long rows."""
    # Imported here, not at the top: lib must import without triton, and importing it is slow.
    from kernels import online_softmax, softmax as fused

    if x.shape[-1] <= fused.MAX_FUSED_COLS:
        return fused.softmax_forward(x)
    return online_softmax.online_softmax_forward(x)


def _softmax_backward_kernel_rows(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """(rows, n) pair → dx on CUDA: the fused backward kernel; rows too long for one block use PyTorch."""
    from kernels import softmax as fused

    if y.shape[-1] <= fused.MAX_FUSED_COLS:
        return fused.softmax_backward(y, dy)
    return softmax_backward_torch(y, dy)


def _softmax_forward(x: torch.Tensor, dim: int) -> torch.Tensor:
    if kernel_applies(x):
        return over_rows(_softmax_kernel_rows, x, dim=dim)
    return softmax_torch(x, dim)


def softmax_backward(y: torch.Tensor, dy: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """dx = y ∘ (dy − ⟨y, dy⟩) along ``dim``: the Triton kernel for CUDA tensors, PyTorch otherwise.

    y, dy: (..., n, ...) of one shape  →  dx of that shape, in y's dtype.
    """
    check_floating_tensor("y", y, dim)
    check_floating_tensor("dy", dy, dim)
    check_same_shape("dy", dy, "y", y)
    if kernel_applies(y, dy):
        return over_rows(_softmax_backward_kernel_rows, y, dy, dim=dim)
    return softmax_backward_torch(y, dy, dim)


class SoftmaxFunction(torch.autograd.Function):
    """y = forward(x, dim); backward dx = y ∘ (dy − ⟨y, dy⟩), which needs only the saved output y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, forward: Callable[[torch.Tensor, int], torch.Tensor]):
        y = forward(x, dim)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        (y,) = ctx.saved_tensors
        return softmax_backward(y, dy, ctx.dim), None, None


def with_softmax_backward(
    forward: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, dim: int
) -> torch.Tensor:
    """Run ``forward(x, dim) → softmax(x)`` and make it differentiable with softmax's backward.

    Every way of computing softmax (one shot, blockwise, a kernel) shares this backward, because
    dx = y ∘ (dy − ⟨y, dy⟩) depends on the output y alone. The backward is not itself differentiable.
    """
    return SoftmaxFunction.apply(x, dim, forward)


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable, differentiable softmax along ``dim``; all-``-inf`` rows give zeros.

    x: (..., n, ...) floating  →  same shape and dtype.

    ``torch.softmax`` returns NaN for a fully masked row; this returns zeros (its gradient is zero
    too), the convention FlashAttention uses. CUDA tensors run the Triton kernels of
    ``kernels.softmax`` (forward and backward); CPU tensors, and float64 anywhere, run
    :func:`softmax_torch`. Half-precision inputs are computed in float32 and rounded once at the end.
    """
    check_floating_tensor("x", x, dim)
    return with_softmax_backward(_softmax_forward, x, dim)
