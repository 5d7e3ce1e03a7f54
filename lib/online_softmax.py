"""Section 00.2 — online softmax: the streaming max/sum recurrence FlashAttention is built on.

Reading a row in blocks x^(1), x^(2), ... we keep a running maximum m and a running sum l of
exp(x - m). Folding in block b:

    m' = max(m, max_j b_j)
    l' = l * exp(m - m') + sum_j exp(b_j - m')

After the last block, softmax(x)_j = exp(x_j - m) / l. Two partial states merge the same way,
which is what lets a long row be split across programs:

    m = max(m_a, m_b),   l = l_a * exp(m_a - m) + l_b * exp(m_b - m)

While a row has seen only ``-inf`` (m = -inf) the exponents use a shift of 0 instead of m, so the
state stays (m=-inf, l=0) instead of becoming NaN.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reference_online_update", "reference_merge_states", "reference_online_softmax"]


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
    """
    m = np.maximum(m_a, m_b)
    shift = _safe_shift(m)
    weight_a = np.where(np.isneginf(m_a), 0.0, np.exp(_safe_shift(m_a) - shift))
    weight_b = np.where(np.isneginf(m_b), 0.0, np.exp(_safe_shift(m_b) - shift))
    return m, l_a * weight_a + l_b * weight_b


def reference_online_softmax(x: np.ndarray, block: int) -> np.ndarray:
    """Softmax over the last axis computed by streaming ``block`` columns at a time (a NumPy loop).

    x: (rows, n)  →  (rows, n) float64, equal to :func:`lib.softmax.reference_softmax` up to rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (rows, n), got shape {x.shape}")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block: expected a positive int, got {block!r}")
    rows, n = x.shape
    m = np.full(rows, -np.inf)
    l = np.zeros(rows)
    for start in range(0, n, block):                      # pass 1: stream the statistics
        m, l = reference_online_update(m, l, x[:, start : start + block])
    e = np.exp(x - _safe_shift(m)[:, None])               # pass 2: normalise with the final state
    return np.divide(e, l[:, None], out=np.zeros_like(e), where=l[:, None] > 0)

