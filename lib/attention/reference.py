"""Section 01.1 — NumPy references for exact attention, in float64.

Two pairs of functions, each checked against the other:

* :func:`attention_ref` / :func:`attention_ref_grad` materialize the score matrix
  S = s·QKᵀ + bias and use the closed-form softmax Jacobian: the obvious, quadratic-memory truth.
* :func:`flash_fwd_np` / :func:`flash_bwd_np` are FlashAttention-2 written as literal loops over
  tiles, line by line as in the syllabus, tail tiles included. Only summation order differs, so
  the two pairs agree to ~1e-12.

Shapes are (..., N, d): any leading dims (batch, heads) broadcast through every matmul. When the
attention is causal, the Nq queries are the *last* Nq of the Nk positions (a prompt's tail, or one
decoded token looking at its cache), as in :func:`lib.models.reference.reference_causal_attention`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["attention_ref", "attention_ref_grad", "flash_bwd_np", "flash_fwd_np", "visible"]


def visible(q_pos, k_pos, causal: bool, window: int | None, n_sink: int):
    """Which keys each query may attend to, for NumPy arrays or torch tensors alike.

    q_pos: (m, 1) absolute query positions, k_pos: (1, n) key positions  →  (m, n) bool.
    Causal: j ≤ i. A ``window`` w keeps the keys near the query: i − w < j ≤ i when causal, the
    two-sided band |i − j| < w otherwise. The first ``n_sink`` positions are *global tokens*: every
    query sees a sink key j < n_sink, and a sink query i < n_sink sees every key (still subject to
    j ≤ i when causal, where that adds nothing). Without a window every key is visible (j ≤ i if causal).
    """
    ok = (k_pos <= q_pos) if causal else (k_pos >= 0) & (q_pos >= 0)
    if window is None:
        return ok
    near = (k_pos > q_pos - window) & (k_pos < q_pos + window)
    return ok & (near | (k_pos < n_sink) | (q_pos < n_sink))


def _positions(n_q: int, n_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_q, 1) query and (1, n_k) key positions; the queries are the last n_q of n_k positions."""
    return np.arange(n_k - n_q, n_k)[:, None], np.arange(n_k)[None, :]


def _scale(d: int, scale: float | None) -> float:
    return 1.0 / np.sqrt(d) if scale is None else float(scale)


def _f64(*arrays):
    return tuple(None if a is None else np.asarray(a, dtype=np.float64) for a in arrays)


def _probabilities(q, k, causal, bias, window, n_sink, scale) -> tuple[np.ndarray, np.ndarray]:
    """Full softmax P (masked entries and fully masked rows 0) and lse per row (−inf if fully masked).

    P = exp(S − lse) with S = s·QKᵀ + bias, S = −inf where masked.  (..., Nq, Nk), (..., Nq).
    """
    s = _scale(q.shape[-1], scale) * (q @ np.swapaxes(k, -1, -2))
    if bias is not None:
        s = s + bias
    s = np.where(visible(*_positions(q.shape[-2], k.shape[-2]), causal, window, n_sink), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)                           # −inf guard: shift by 0
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    with np.errstate(divide="ignore"):
        lse = (m + np.log(total))[..., 0]                          # log 0 = −inf for empty rows
    return p, lse


def attention_ref(q, k, v, causal: bool = False, bias=None, window: int | None = None, n_sink: int = 0,
                  scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax attention with the whole score matrix in memory, float64.

    q: (..., Nq, d), k: (..., Nk, d), v: (..., Nk, dv), bias: broadcastable to (..., Nq, Nk)
    →  o: (..., Nq, dv), lse: (..., Nq), with

        S = s·QKᵀ + bias (−inf where masked),  O = softmax(S) V,  lse = log Σ_j exp S_ij,

    s = 1/√d unless ``scale`` is given. ``causal``, ``window`` and ``n_sink`` mask as :func:`visible`
    says. A fully masked row gives o = 0 and lse = −inf.
    """
    q, k, v, bias = _f64(q, k, v, bias)
    p, lse = _probabilities(q, k, causal, bias, window, n_sink, scale)
    return p @ v, lse


def attention_ref_grad(q, k, v, do, causal: bool = False, bias=None, window: int | None = None,
                       n_sink: int = 0, scale: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`attention_ref`'s o with upstream gradient ``do``, float64.

    do: (..., Nq, dv)  →  dq (..., Nq, d), dk (..., Nk, d), dv (..., Nk, dv), from the softmax
    Jacobian dS = P ∘ (dP − rowsum(P ∘ dP)) with dP = dO Vᵀ:

        dV = Pᵀ dO,  dQ = s·dS K,  dK = s·dSᵀ Q.
    """
    q, k, v, do, bias = _f64(q, k, v, do, bias)
    p, _ = _probabilities(q, k, causal, bias, window, n_sink, scale)
    s = _scale(q.shape[-1], scale)
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    return s * ds @ k, s * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ do


def _key_tiles(row_start: int, row_stop: int, n_q: int, n_k: int, block_n: int, causal: bool) -> range:
    """Start of every key tile that row tile [row_start, row_stop) must visit: all of them, or,
    when causal, only those that begin at or before the tile's last query position."""
    last = n_k if not causal else n_k - n_q + row_stop                # one past the last visible key
    return range(0, min(last, n_k), block_n)


def _masked_scores(q_i, k_j, row_start: int, col_start: int, n_q: int, n_k: int, causal: bool, s: float):
    """S_ij = s·Q_i K_jᵀ, with −inf above the diagonal when causal (only diagonal tiles change)."""
    s_ij = s * (q_i @ np.swapaxes(k_j, -1, -2))
    if causal:
        q_pos = np.arange(n_k - n_q + row_start, n_k - n_q + row_start + q_i.shape[-2])[:, None]
        k_pos = np.arange(col_start, col_start + k_j.shape[-2])[None, :]
        s_ij = np.where(k_pos > q_pos, -np.inf, s_ij)
    return s_ij


def flash_fwd_np(q, k, v, block_m: int, block_n: int, causal: bool = False,
                 scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FlashAttention-2 forward as loops over tiles, float64; equals :func:`attention_ref`.

    q: (..., Nq, d), k: (..., Nk, d), v: (..., Nk, dv)  →  o (..., Nq, dv), lse (..., Nq).
    Per row tile i, with m = −inf, ℓ = 0, Acc = 0, for each key tile j:

        m' = max(m, rowmax S_ij);  α = exp(m − m');  P̃ = exp(S_ij − m')
        ℓ = α·ℓ + rowsum P̃;  Acc = diag(α)·Acc + P̃ V_j;  m = m'

    (exponents use 0 instead of m' while m' = −inf), then O_i = Acc / ℓ and L_i = m + log ℓ.
    """
    q, k, v = _f64(q, k, v)
    s = _scale(q.shape[-1], scale)
    n_q, n_k = q.shape[-2], k.shape[-2]
    o = np.zeros(q.shape[:-1] + v.shape[-1:])
    lse = np.zeros(q.shape[:-1])
    for r0 in range(0, n_q, block_m):
        r1 = min(r0 + block_m, n_q)
        q_i = q[..., r0:r1, :]
        m = np.full(q_i.shape[:-1] + (1,), -np.inf)
        l = np.zeros_like(m)
        acc = np.zeros(q_i.shape[:-1] + v.shape[-1:])
        for c0 in _key_tiles(r0, r1, n_q, n_k, block_n, causal):
            s_ij = _masked_scores(q_i, k[..., c0 : c0 + block_n, :], r0, c0, n_q, n_k, causal, s)
            m_new = np.maximum(m, s_ij.max(axis=-1, keepdims=True))
            shift = np.where(np.isneginf(m_new), 0.0, m_new)
            alpha = np.exp(m - shift)
            p_tilde = np.exp(s_ij - shift)
            l = alpha * l + p_tilde.sum(axis=-1, keepdims=True)
            acc = alpha * acc + p_tilde @ v[..., c0 : c0 + block_n, :]
            m = m_new
        o[..., r0:r1, :] = np.divide(acc, l, out=np.zeros_like(acc), where=l > 0)
        with np.errstate(divide="ignore"):
            lse[..., r0:r1] = (m + np.log(l))[..., 0]
    return o, lse


def _empty_rows_to_inf(lse: np.ndarray) -> np.ndarray:
    """L with +inf for fully masked rows (L = −inf), so that P = exp(S − L) is 0 there, not NaN."""
    return np.where(np.isneginf(lse), np.inf, lse)


def flash_bwd_np(q, k, v, o, lse, do, block_m: int, block_n: int, causal: bool = False,
                 scale: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FlashAttention-2 backward as loops over tiles, float64; equals :func:`attention_ref_grad`.

    o, lse: :func:`flash_fwd_np`'s outputs; do: (..., Nq, dv). First D = rowsum(dO ∘ O); then for
    each key tile j, over the row tiles i that reach it (P recomputed, never stored):

        P = exp(S_ij − L_i);  dV_j += Pᵀ dO_i;  dP = dO_i V_jᵀ;  dS = P ∘ (dP − D_i)
        dK_j += s·dSᵀ Q_i;  dQ_i += s·dS K_j

    Masked entries and fully masked rows (L = −inf) have P = 0.
    """
    q, k, v, o, lse, do = _f64(q, k, v, o, lse, do)
    s = _scale(q.shape[-1], scale)
    n_q, n_k = q.shape[-2], k.shape[-2]
    d_row = (do * o).sum(axis=-1, keepdims=True)                    # D: (..., Nq, 1)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for c0 in range(0, n_k, block_n):
        c1 = min(c0 + block_n, n_k)
        k_j, v_j = k[..., c0:c1, :], v[..., c0:c1, :]
        first_row = max(0, c0 - (n_k - n_q)) if causal else 0        # rows above see none of tile j
        for r0 in range((first_row // block_m) * block_m, n_q, block_m):
            r1 = min(r0 + block_m, n_q)
            q_i, do_i = q[..., r0:r1, :], do[..., r0:r1, :]
            s_ij = _masked_scores(q_i, k_j, r0, c0, n_q, n_k, causal, s)
            p = np.exp(s_ij - _empty_rows_to_inf(lse[..., r0:r1, None]))
            dv[..., c0:c1, :] += np.swapaxes(p, -1, -2) @ do_i
            dp = do_i @ np.swapaxes(v_j, -1, -2)
            ds = p * (dp - d_row[..., r0:r1, :])
            dk[..., c0:c1, :] += s * np.swapaxes(ds, -1, -2) @ q_i
            dq[..., r0:r1, :] += s * ds @ k_j
    return dq, dk, dv
