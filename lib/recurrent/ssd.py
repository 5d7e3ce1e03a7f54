"""Mamba-2's scalar-decay SSM on a sequence: the recurrence, its "masked attention" form, one step.

Per head, with a state ``h ∈ R^{N×P}`` (N state size, P head size)::

    h_t = a_t · h_{t−1} + B_t x_tᵀ          a_t = exp(log_a_t) ∈ (0, 1], one scalar per head
    y_t = h_tᵀ C_t                          B_t, C_t ∈ R^N shared by the heads, x_t, y_t ∈ R^P

(Mamba-2 feeds ``x_t · dt_t`` and ``log_a_t = dt_t · A``; the model does that before calling.)
Unrolled from a start state ``h_0``, with cumulative log-decays ``cum_t = Σ_{r ≤ t} log_a_r``::

    y_t = exp(cum_t) C_tᵀ h_0 + Σ_{s ≤ t} exp(cum_t − cum_s) (C_t · B_s) x_s

which is attention with scores ``C_t · B_s`` and a decay mask ``L[t, s] = exp(cum_t − cum_s)``
on ``s ≤ t`` (Dao & Gu's state-space duality). :func:`ssd_mask_form` is written for any
visibility mask, so the tree form of :mod:`lib.recurrent.ssd_tree` is the same function with the
causal mask replaced by an ancestor mask.

Shapes (torch, batched): x (b, T, H, P), log_a and cum (b, T, H), B and C (b, T, N),
h (b, H, N, P). The NumPy references take one sequence: x (T, H, P), log_a (T, H), B and C
(T, N), h (H, N, P), float64.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "causal_conv",
    "path_state",
    "ssd_chain",
    "ssd_chain_masked_ref",
    "ssd_mask_form",
    "ssd_scan_ref",
    "ssd_step",
]


# ----------------------------------------------------------------------------- NumPy references


def _zero_state(x: np.ndarray, B: np.ndarray, h0: np.ndarray | None) -> np.ndarray:
    """``h0`` as float64, or zeros (H, N, P) when it is None."""
    return np.zeros((x.shape[1], B.shape[1], x.shape[2])) if h0 is None else np.asarray(h0, dtype=np.float64)


def ssd_scan_ref(
    x: np.ndarray, log_a: np.ndarray, B: np.ndarray, C: np.ndarray, h0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The recurrence, one step at a time: returns y (T, H, P) and the last state h_T (H, N, P)."""
    h = _zero_state(x, B, h0).copy()
    ys = []
    for t in range(x.shape[0]):
        for head in range(x.shape[1]):
            h[head] = np.exp(log_a[t, head]) * h[head] + np.outer(B[t], x[t, head])
        ys.append(np.einsum("hnp,n->hp", h, C[t]))
    return np.stack(ys) if ys else np.zeros_like(x, dtype=np.float64), h


def ssd_chain_masked_ref(
    x: np.ndarray, log_a: np.ndarray, B: np.ndarray, C: np.ndarray, h0: np.ndarray | None = None
) -> np.ndarray:
    """The masked-attention form, entry by entry: y (T, H, P).

    ``L[t, s] = exp(Σ_{r=s+1}^{t} log_a_r)`` for s ≤ t (a sum of the decays *between* s and t,
    written as a loop, not as a difference of prefix sums), 0 above the diagonal.
    """
    T, H, _ = x.shape
    h0 = _zero_state(x, B, h0)
    y = np.zeros(x.shape)
    for t in range(T):
        for head in range(H):
            y[t, head] = np.exp(log_a[: t + 1, head].sum()) * (C[t] @ h0[head])
            for s in range(t + 1):
                decay = np.exp(log_a[s + 1 : t + 1, head].sum())
                y[t, head] += decay * (C[t] @ B[s]) * x[s, head]
    return y


# ----------------------------------------------------------------------------- torch


def ssd_mask_form(
    x: torch.Tensor, cum: torch.Tensor, B: torch.Tensor, C: torch.Tensor, mask: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> torch.Tensor:
    """y (b, T, H, P) of the mask form for any visibility ``mask`` (T, T) bool (row t sees column s).

    ``L = exp(cum_t − cum_s)`` with invisible entries set to −∞ *before* the exponential (an
    invisible pair can have cum_t − cum_s > 0, whose exp may overflow; 0 · inf would be NaN).
    ``y_t = Σ_s L[t, s] (C_t · B_s) x_s + exp(cum_t) C_tᵀ h_0``: two batched matrix products.
    """
    seg = cum[:, :, None, :] - cum[:, None, :, :]  # (b, T, T, H)
    decay = seg.masked_fill(~mask[None, :, :, None], float("-inf")).exp()
    scores = torch.einsum("btn,bsn->bts", C, B)[..., None] * decay  # (b, T, T, H)
    y = torch.einsum("btsh,bshp->bthp", scores, x)
    if h0 is not None:
        y = y + torch.einsum("btn,bhnp->bthp", C, h0) * cum.exp()[..., None]
    return y


def path_state(
    x: torch.Tensor, cum: torch.Tensor, B: torch.Tensor, weights_mask: torch.Tensor, end: int,
    h0: torch.Tensor | None = None,
) -> torch.Tensor:
    """The state after position ``end`` from the positions ``weights_mask`` (T,) marks: (b, H, N, P).

    ``h = exp(cum_end) h_0 + Σ_{s marked} exp(cum_end − cum_s) B_s x_sᵀ``: row ``end`` of the
    mask form, applied to the outer products instead of contracted with C. On a chain the marked
    positions are 0..end; on a tree, the root path of ``end``.
    """
    w = (cum[:, end : end + 1, :] - cum).masked_fill(~weights_mask[None, :, None], float("-inf")).exp()
    h = torch.einsum("bsh,bsn,bshp->bhnp", w, B, x)
    if h0 is not None:
        h = h + cum[:, end, :].exp()[:, :, None, None] * h0
    return h


def ssd_chain(
    x: torch.Tensor, log_a: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chain in one parallel pass: y (b, T, H, P) and the last state h_T (b, H, N, P).

    ``cum`` is a prefix sum and the mask is causal. Differences of prefix sums lose a little
    precision when Σ log a grows large (|cum| ~ 10² costs ~10⁻⁵ relative in float32); Mamba-2
    chunks long sequences for that reason, and T ≤ 256 here.
    """
    T = x.shape[1]
    cum = log_a.cumsum(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    y = ssd_mask_form(x, cum, B, C, causal, h0)
    return y, path_state(x, cum, B, causal[-1], T - 1, h0)


def ssd_step(
    x: torch.Tensor, log_a: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: x (b, H, P), log_a (b, H), B and C (b, N), h (b, H, N, P) → (y (b, H, P), new h)."""
    h = log_a.exp()[:, :, None, None] * h + torch.einsum("bn,bhp->bhnp", B, x)
    return torch.einsum("bhnp,bn->bhp", h, C), h


def causal_conv(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Depthwise causal convolution of width W continuing from ``state``: u (b, T, D) → (b, T, D).

    ``out_t = bias + Σ_{j<W} weight[:, j] · v_{t−W+1+j}`` over v = [state (b, W−1, D) ; u]: the
    state holds the W − 1 inputs before u (zeros at the start of a text). weight (D, W), bias (D,).
    """
    v = torch.cat([state, u], dim=1).transpose(1, 2)  # (b, D, W − 1 + T)
    return F.conv1d(v, weight[:, None, :], bias, groups=weight.shape[0]).transpose(1, 2)
