"""NumPy references for the workbench's models (section 00.3), in float64.

They are what the torch models are checked against, and what later chapters' references build on:

* :func:`reference_causal_attention` — one attention layer's core, softmax(q kᵀ / √d + bias) v, with
  queries that are the *last* ``Tq`` of ``Tk`` positions (a prompt's tail, or one decoded token
  looking at its KV cache);
* :func:`reference_sentence_embedding` — mean pooling over the real tokens, then L2 normalisation,
  the sentence embedding of all-MiniLM-L6-v2.
"""

from __future__ import annotations

import numpy as np

from lib.softmax import reference_softmax

__all__ = ["reference_causal_attention", "reference_sentence_embedding"]


def reference_causal_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None = None
) -> np.ndarray:
    """Causal scaled dot-product attention for queries at positions ``Tk - Tq, ..., Tk - 1``.

    q: (..., Tq, d), k: (..., Tk, d), v: (..., Tk, dv), bias: broadcastable to (..., Tq, Tk)
    →  (..., Tq, dv) float64, with

        S = q kᵀ / √d + bias,   S[i, j] = -inf where key j lies after query i,   out = softmax(S) v
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    tq, tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    if tq > tk:
        raise ValueError(f"q: expected at most as many queries as keys ({tk}), got {tq}")
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)                # (..., Tq, Tk)
    if bias is not None:
        scores = scores + bias
    query_pos = np.arange(tk - tq, tk)[:, None]                     # absolute position of each query
    scores = np.where(np.arange(tk)[None, :] > query_pos, -np.inf, scores)
    return reference_softmax(scores) @ v


def reference_sentence_embedding(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the last hidden states over real tokens, scaled to unit length.

    hidden: (N, T, D), mask: (N, T) with 1 for real tokens and 0 for padding  →  (N, D) float64,

        e = Σ_t mask_t h_t / Σ_t mask_t,   embedding = e / ‖e‖₂
    """
    hidden = np.asarray(hidden, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)[..., None]            # (N, T, 1)
    mean = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True)
