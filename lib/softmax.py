"""Section 00.1 — softmax, from a NumPy reference to a fused kernel.

    softmax(x)_j = exp(x_j - m) / sum_k exp(x_k - m),   m = max_k x_k

Subtracting the row maximum ``m`` changes nothing mathematically and keeps every exponent ≤ 0,
so nothing overflows. A row whose entries are all ``-inf`` (a fully masked row) has no
distribution; the book returns zeros for it, as FlashAttention does, rather than NaN.

The backward pass of ``y = softmax(x)`` for an upstream gradient ``dy`` is

    dx = y * (dy - sum_k y_k dy_k)
"""

from __future__ import annotations

import numpy as np

__all__ = ["reference_softmax", "reference_softmax_backward"]


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
    if y.shape != dy.shape:
        raise ValueError(f"dy: expected shape {y.shape} (the shape of y), got {dy.shape}")
    return y * (dy - np.sum(y * dy, axis=-1, keepdims=True))
