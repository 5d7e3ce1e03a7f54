"""Section 01.3 — Delta Attention: a sparse prefill plus a dense correction measured on a few rows.

Willette, Lee and Hwang, "Delta Attention: Fast and Accurate Sparse Attention Inference by Delta
Correction", arXiv 2505.11254 (2025).

A sliding window with sink tokens computes every output from a few keys (cost O(N·(w + sinks))),
but its outputs drift away from those of full attention. Delta Attention also computes *exact*
attention for every γ-th query (dense in keys, sparse in queries: about N²/γ score entries),
measures the gap on those rows and adds it to the whole block of γ rows that starts there::

    O^sp_i = Σ_{j ∈ W(i)} softmax_j(s·q_i·k_j) v_j                 the sparse (window + sinks) output
    r_t    = t·γ,  Δ_t = O^dense_{r_t} − O^sp_{r_t}                  t = 0 … ⌈N/γ⌉ − 1
    O_i    = O^sp_i + Δ_{⌊i/γ⌋}

W(i) is the mask of :func:`lib.attention.reference.visible` (causal or two-sided window, sinks as
global tokens). Taking the *first* row of each block as representative keeps a causal prefill
causal: Δ_t reads keys ≤ r_t ≤ i only. The authors' code makes the same choice.

* NumPy float64 references: :func:`sparse_window_attention_np`, :func:`dense_rows_np`,
  :func:`delta_correct_np` (and :func:`delta_attention_np`, the three in a row).
* :func:`delta_attention`: the sparse part is :func:`lib.attention.flash.flash_attention` with
  ``window``/``n_sink`` (key tiles outside the window are skipped), the dense rows run the same
  kernel on the gathered queries ``q[..., ::γ, :]``, and the correction is a broadcast add.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lib.attention.flash import flash_attention, tiles_visited
from lib.attention.reference import visible
from lib.validation import check_positive_int, check_tensor

__all__ = [
    "delta_attention",
    "delta_attention_np",
    "delta_correct",
    "delta_correct_np",
    "delta_tiles",
    "dense_rows",
    "dense_rows_np",
    "representative_rows",
    "sparse_window_attention_np",
]


def representative_rows(n: int, gamma: int) -> np.ndarray:
    """r_t = t·γ for t = 0 … ⌈n/γ⌉ − 1: the first row of every block of γ rows.  → (⌈n/γ⌉,) int."""
    return np.arange(0, n, gamma)


# ----------------------------------------------------------------------------- NumPy references


def _softmax_row(scores: np.ndarray) -> np.ndarray:
    """softmax over the last axis of (..., m) scores, all finite."""
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sparse_window_attention_np(q, k, v, window: int, n_sink: int, causal: bool) -> np.ndarray:
    """Sliding-window attention with sinks, one query row at a time, float64.

    q, k: (..., N, d), v: (..., N, dv)  →  (..., N, dv), with s = 1/√d and

        O^sp_i = Σ_{j ∈ W(i)} softmax_j(s·q_i·k_j) v_j,

    W(i) = {j : |i − j| < w} (or i − w < j ≤ i when causal) ∪ {j < n_sink}, and every key when
    i < n_sink (a sink is a global token; causal still keeps j ≤ i).
    """
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    n = q.shape[-2]
    positions = np.arange(n)
    out = np.zeros(q.shape[:-1] + v.shape[-1:])
    for i in range(n):
        keys = np.flatnonzero(visible(np.array([[i]]), positions[None, :], causal, window, n_sink)[0])
        scores = (q[..., i, None, :] @ np.swapaxes(k[..., keys, :], -1, -2))[..., 0, :] / math.sqrt(q.shape[-1])
        out[..., i, :] = (_softmax_row(scores)[..., None, :] @ v[..., keys, :])[..., 0, :]
    return out


def dense_rows_np(q, k, v, rows, causal: bool) -> np.ndarray:
    """Exact attention for the query rows ``rows`` only (sparse in queries, dense in keys), float64.

    q, k: (..., N, d), v: (..., N, dv), rows: (R,) positions  →  (..., R, dv), row t being

        O^dense_{r_t} = Σ_j softmax_j(s·q_{r_t}·k_j) v_j   over all j (j ≤ r_t when causal).
    """
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    out = np.zeros(q.shape[:-2] + (len(rows), v.shape[-1]))
    for t, r in enumerate(rows):
        last = r + 1 if causal else k.shape[-2]
        scores = (q[..., r, None, :] @ np.swapaxes(k[..., :last, :], -1, -2))[..., 0, :] / math.sqrt(q.shape[-1])
        out[..., t, :] = (_softmax_row(scores)[..., None, :] @ v[..., :last, :])[..., 0, :]
    return out


def delta_correct_np(o_sparse, o_dense_rows, gamma: int) -> np.ndarray:
    """O_i = O^sp_i + Δ_{⌊i/γ⌋} with Δ_t = O^dense_{r_t} − O^sp_{r_t}, r_t = t·γ, float64.

    o_sparse: (..., N, dv), o_dense_rows: (..., ⌈N/γ⌉, dv)  →  (..., N, dv). The last block may be
    shorter than γ; at every representative row the result is the dense row.
    """
    o_sparse = np.asarray(o_sparse, dtype=np.float64)
    out = o_sparse.copy()
    for t, r in enumerate(representative_rows(o_sparse.shape[-2], gamma)):
        delta = o_dense_rows[..., t, :] - o_sparse[..., r, :]              # (..., dv)
        out[..., r : r + gamma, :] += delta[..., None, :]
    return out


def delta_attention_np(q, k, v, window: int, n_sink: int, gamma: int, causal: bool) -> np.ndarray:
    """The three references in a row: sparse outputs, dense representative rows, correction.  → (..., N, dv)."""
    o_sparse = sparse_window_attention_np(q, k, v, window, n_sink, causal)
    rows = representative_rows(np.shape(q)[-2], gamma)
    return delta_correct_np(o_sparse, dense_rows_np(q, k, v, rows, causal), gamma)


# ----------------------------------------------------------------------------- PyTorch


def _check_delta_args(q, k, v, window, n_sink, gamma, causal) -> None:
    """One-line errors naming the argument; flash_attention checks dtypes and the rest of the shapes."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x)
    if q.ndim >= 2 and k.ndim >= 2 and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"q: expected as many queries as keys (a prefill, self-attention), got shapes {tuple(q.shape)} and "
            f"{tuple(k.shape)}"
        )
    check_positive_int("window", window)
    if isinstance(n_sink, bool) or not isinstance(n_sink, int) or n_sink < 0:
        raise ValueError(f"n_sink: expected a non-negative int, got {n_sink!r}")
    check_positive_int("gamma", gamma)
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")


def dense_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: int, causal: bool,
               block_m: int = 64, block_n: int = 64) -> torch.Tensor:
    """Exact attention of the gathered queries q[..., ::γ, :] over all keys: (..., ⌈N/γ⌉, dv).

    Causal: row t sees keys j ≤ t·γ, its absolute position, passed to the kernel as an additive
    −inf mask of shape (⌈N/γ⌉, N) (memory N²/γ; the authors' kernel takes the positions instead).
    """
    q_rows = q[..., ::gamma, :]
    bias = None
    if causal:
        rows = torch.arange(0, q.shape[-2], gamma, device=q.device)[:, None]
        keys = torch.arange(k.shape[-2], device=q.device)[None, :]
        bias = torch.zeros(rows.shape[0], keys.shape[1], dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(keys > rows, float("-inf"))
    return flash_attention(q_rows, k, v, bias=bias, block_m=block_m, block_n=block_n)


def delta_correct(o_sparse: torch.Tensor, o_dense_rows: torch.Tensor, gamma: int) -> torch.Tensor:
    """O = O^sp + Δ repeated over each block of γ rows, Δ_t = O^dense_t − O^sp_{tγ}.

    o_sparse: (..., N, dv), o_dense_rows: (..., ⌈N/γ⌉, dv)  →  (..., N, dv).
    """
    delta = o_dense_rows - o_sparse[..., ::gamma, :]                       # (..., ⌈N/γ⌉, dv)
    return o_sparse + delta.repeat_interleave(gamma, dim=-2)[..., : o_sparse.shape[-2], :]


def delta_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int, n_sink: int = 0,
                    gamma: int, causal: bool = False, block_m: int = 64, block_n: int = 64) -> torch.Tensor:
    """Sliding-window attention with sinks, corrected by Δ measured on every γ-th row; differentiable.

    q, k: (B, H, N, d) or (B, N, d); v: (…, N, dv)  →  (…, N, dv) in q's dtype, with
    O_i = O^sp_i + O^dense_{⌊i/γ⌋γ} − O^sp_{⌊i/γ⌋γ} (see the module docstring). ``window`` ≥ 1 is
    two-sided unless ``causal``; the first ``n_sink`` positions are global tokens.
    """
    _check_delta_args(q, k, v, window, n_sink, gamma, causal)
    o_sparse = flash_attention(q, k, v, causal=causal, window=window, n_sink=n_sink,
                               block_m=block_m, block_n=block_n)
    return delta_correct(o_sparse, dense_rows(q, k, v, gamma, causal, block_m, block_n), gamma)


def delta_tiles(n: int, *, window: int, n_sink: int, gamma: int, causal: bool, block_m: int = 64,
                block_n: int = 64) -> dict[str, int]:
    """Score tiles (B_r × B_c blocks of QKᵀ and PV) computed for one (batch, head) of N tokens.

    Returns ``dense`` (flash attention, causal skipping if causal), ``sparse`` (the window and sink
    tiles) and ``rows`` (the ⌈N/γ⌉ gathered rows against every key tile; with the causal mask passed
    as a bias no tile is skipped). Each tile costs 4·B_r·B_c·d FLOPs in the forward pass.
    """
    n_rows = len(representative_rows(n, gamma))
    return {
        "dense": tiles_visited(n, n, block_m, block_n, causal=causal),
        "sparse": tiles_visited(n, n, block_m, block_n, causal=causal, window=window, n_sink=n_sink),
        "rows": tiles_visited(n_rows, n, block_m, block_n),
    }
