"""Section 00.2 — online softmax: the streaming max/sum recurrence FlashAttention is built on.

Milakov & Gimelshein, "Online normalizer calculation for softmax", arXiv 1805.02867 (2018).

Reading a row in blocks x^(1), x^(2), ... we keep a running maximum m and a running sum l of
exp(x - m). Folding in block b:

    m' = max(m, max_j b_j)
    l' = l * exp(m - m') + sum_j exp(b_j - m')

After the last block, softmax(x)_j = exp(x_j - m) / l. Two partial states merge the same way,
which is what lets a long row be split across programs:

    m = max(m_a, m_b),   l = l_a * exp(m_a - m) + l_b * exp(m_b - m)

While a row has seen only ``-inf`` (m = -inf) the exponents use a shift of 0 instead of m, so the
state stays (m=-inf, l=0) instead of becoming NaN.

Three implementations, each tested against the one before: the NumPy loop
(:func:`reference_online_softmax`), the blockwise PyTorch version (:func:`online_softmax_torch`,
vectorised over rows) and the Triton kernels of ``kernels.online_softmax``.
:func:`online_softmax` dispatches between the last two and is differentiable.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from lib.softmax import (
    compute_dtype,
    kernel_applies,
    over_rows,
    safe_normalizer,
    safe_shift,
    with_softmax_backward,
)
from lib.validation import check_floating_tensor, check_ndim, check_positive_int

__all__ = [
    "merge_states",
    "online_softmax",
    "online_softmax_torch",
    "online_update",
    "reference_merge_states",
    "reference_online_softmax",
    "reference_online_update",
]


# ----------------------------------------------------------------------------- NumPy reference


def _safe_shift(m: np.ndarray) -> np.ndarray:
    """The shift used in exponents: m itself, or 0 where m is -inf (nothing seen yet)."""
    return np.where(np.isneginf(m), 0.0, m)


def reference_online_update(m: np.ndarray, l: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold one block of every row into the running state, in float64.

    m, l: (rows,) running max and running sum;  block: (rows, b)  →  (m', l'), each (rows,).
    """
    block = np.asarray(block, dtype=np.float64)
    m_block = block.max(axis=-1)                                            # (rows,)
    l_block = np.exp(block - _safe_shift(m_block)[:, None]).sum(axis=-1)    # (rows,)
    return reference_merge_states(m, l, m_block, l_block)


def reference_merge_states(
    m_a: np.ndarray, l_a: np.ndarray, m_b: np.ndarray, l_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Combine two partial states of the same rows (associative and commutative), in float64.

    m_a, l_a, m_b, l_b: (rows,)  →  (m, l), each (rows,).
    An empty part (m = -inf, l = 0) gets weight exp(-inf - shift) = 0: it changes nothing.
    """
    m = np.maximum(m_a, m_b)
    shift = _safe_shift(m)
    return m, l_a * np.exp(m_a - shift) + l_b * np.exp(m_b - shift)


def reference_online_softmax(x: np.ndarray, block: int) -> np.ndarray:
    """Softmax over the last axis computed by streaming ``block`` columns at a time (a NumPy loop).

    x: (rows, n)  →  (rows, n) float64, equal to :func:`lib.softmax.reference_softmax` up to rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    check_ndim("x", x, "rows, n")
    check_positive_int("block", block)
    rows, n = x.shape
    m = np.full(rows, -np.inf)
    l = np.zeros(rows)
    for start in range(0, n, block):                      # pass 1: stream the statistics
        m, l = reference_online_update(m, l, x[:, start : start + block])
    e = np.exp(x - _safe_shift(m)[:, None])               # pass 2: normalise with the final state
    return np.divide(e, l[:, None], out=np.zeros_like(e), where=l[:, None] > 0)


# ----------------------------------------------------------------------------- PyTorch, blockwise


def merge_states(
    m_a: torch.Tensor, l_a: torch.Tensor, m_b: torch.Tensor, l_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, l) of the union of two parts of the same rows: m = max(m_a, m_b), l = l_a e^(m_a−m) + l_b e^(m_b−m).

    m_a, l_a, m_b, l_b: (...,) one state per row  →  (m, l), each (...,). Associative, commutative,
    and the empty state (-inf, 0) is its identity.
    """
    m = torch.maximum(m_a, m_b)
    shift = safe_shift(m)
    return m, l_a * torch.exp(m_a - shift) + l_b * torch.exp(m_b - shift)


def online_update(m: torch.Tensor, l: torch.Tensor, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold one block of columns into every row's running state.

    m, l: (...,) running max and sum;  block: (..., b)  →  (m', l'), each (...,).
    The block's own state is (max_j b_j, Σ_j exp(b_j − max)); merging it is the update.
    """
    m_block = block.amax(dim=-1)
    l_block = torch.exp(block - safe_shift(m_block).unsqueeze(-1)).sum(dim=-1)
    return merge_states(m, l, m_block, l_block)


def online_softmax_torch(x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Softmax over the last axis by streaming ``block`` columns at a time, all rows at once.

    x: (..., n) floating  →  (..., n) in x's dtype; half types are computed in float32.
    Pass 1 folds the blocks into (m, l) per row with :func:`online_update`; pass 2 writes
    exp(x − m) / l (zeros for an all −inf row).
    """
    xc = x.to(compute_dtype(x.dtype))
    m = torch.full(xc.shape[:-1], float("-inf"), dtype=xc.dtype, device=xc.device)
    l = torch.zeros_like(m)
    for start in range(0, xc.shape[-1], block):                     # pass 1: statistics
        m, l = online_update(m, l, xc[..., start : start + block])
    e = torch.exp(xc - safe_shift(m).unsqueeze(-1))                 # pass 2: normalise
    return (e / safe_normalizer(l).unsqueeze(-1)).to(x.dtype)


def _online_softmax_kernel_rows(x: torch.Tensor, block: int) -> torch.Tensor:
    """(rows, n) → (rows, n) on CUDA through the looped Triton kernel."""
    # Imported here, not at the top: lib must import without triton, and importing it is slow.
    from kernels.online_softmax import online_softmax_forward

    return online_softmax_forward(x, block=block)


def _online_softmax_forward(x: torch.Tensor, dim: int, block: int) -> torch.Tensor:
    rows_fn = _online_softmax_kernel_rows if kernel_applies(x) else online_softmax_torch
    return over_rows(partial(rows_fn, block=block), x, dim=dim)


def online_softmax(x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Softmax over the last axis computed online, ``block`` columns per step; differentiable.

    x: (..., n) floating  →  (..., n) in x's dtype; all −inf rows give zeros.
    CUDA tensors run ``kernels.online_softmax`` (``block`` rounded up to a power of two); CPU
    tensors and float64 run :func:`online_softmax_torch`. The backward is softmax's own,
    dx = y ∘ (dy − ⟨y, dy⟩), shared with :func:`lib.softmax.softmax`.
    """
    check_floating_tensor("x", x, -1)
    check_positive_int("block", block)
    return with_softmax_backward(partial(_online_softmax_forward, block=block), x, -1)
