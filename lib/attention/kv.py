"""Section 01.4 — attention without a query projection: the Key-Value Transformer.

Borji, "Key-Value Transformer", arXiv 2305.19129 (2023), the original (v1) formulation. Each
head compares keys with keys:

    K = x W_K,  V = x W_V,  S = K Kᵀ / √d_h  (symmetric: S = Sᵀ),  out = softmax(S) V.

S is a Gram matrix, so S_ij ≤ max(S_ii, S_jj): of any two tokens, at least one scores itself at
least as high as the other. KV+Pos breaks the symmetry with a fixed 2D sinusoidal code P_ij ∈ R^C
of the pair (i, j), mixed into the logits by a learned map (w ∈ R^C, b), one per layer:

    S'_ij = w · (S_ij 1_C + P_ij) + b = (Σ_c w_c) S_ij + w · P_ij + b,   P_ij ≠ P_ji.

* :func:`pos_encoding_2d`, :func:`kv_logits_np`, :func:`kv_attention_np` — NumPy float64 references.
* :class:`KVSelfAttention` — the layer, a drop-in mixer for :class:`lib.models.tiny_encoder.TinyEncoder`:
  one fused Linear d → 2d for K and V, and :func:`lib.attention.flash_attention` with the key as
  query (scaled by σ = Σ_c w_c) and the positional term as its additive ``bias``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lib.attention.flash import flash_attention
from lib.models.tiny_encoder import check_heads, check_sequence, merge_heads, split_heads
from lib.validation import check_int_in_range, check_ndim, check_positive_int

__all__ = ["POS_CHANNELS", "KVSelfAttention", "kv_attention_np", "kv_logits_np", "pos_encoding_2d"]

POS_CHANNELS = 10
"""Channels C of the pair code P_ij (the paper's code uses 10)."""


def pos_encoding_2d(n: int, channels: int = POS_CHANNELS) -> np.ndarray:
    """The 2D sinusoidal code of every pair (i, j): (n, n, channels) float64.

    Each axis gets m = 2⌈C/4⌉ channels, interleaved sin/cos at the frequencies
    ω_k = 10000^(−2k/m), k = 0 … m/2 − 1: P_ij = [sin iω_0, cos iω_0, …, sin jω_0, cos jω_0, …],
    the row block (query position i) first, cut to C channels. P_ij ≠ P_ji unless i = j.
    """
    check_positive_int("n", n)
    check_int_in_range("channels", channels, 1, 4096)
    per_axis = 2 * math.ceil(channels / 4)
    frequencies = 10000.0 ** (-np.arange(0, per_axis, 2) / per_axis)      # (m/2,)
    angles = np.arange(n)[:, None] * frequencies[None, :]                  # (n, m/2)
    code = np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(n, per_axis)  # sin, cos interleaved
    rows = np.broadcast_to(code[:, None, :], (n, n, per_axis))             # depends on i
    cols = np.broadcast_to(code[None, :, :], (n, n, per_axis))             # depends on j
    return np.concatenate([rows, cols], axis=-1)[..., :channels].copy()


def kv_logits_np(
    x: np.ndarray, Wk: np.ndarray, n_heads: int, pos: np.ndarray | None = None,
    w: np.ndarray | None = None, b: float = 0.0,
) -> np.ndarray:
    """KV logits of every head: (H, N, N), float64.

    x (N, d); Wk (d, H·d_h), head h owning columns h·d_h … (h+1)·d_h − 1. K_h = x Wk_h;
    S_h = K_h K_hᵀ / √d_h; with ``pos`` (N, N, C) and ``w`` (C,): S'_h = (Σw) S_h + pos·w + b.
    """
    x, Wk = np.asarray(x, dtype=np.float64), np.asarray(Wk, dtype=np.float64)
    check_ndim("x", x, "N, d")
    check_ndim("Wk", Wk, "d, H·d_h")
    if Wk.shape[0] != x.shape[1]:
        raise ValueError(f"Wk: expected {x.shape[1]} rows (the features of x), got shape {Wk.shape}")
    check_heads(Wk.shape[1], n_heads)
    d_h = Wk.shape[1] // n_heads
    logits = np.empty((n_heads, x.shape[0], x.shape[0]))
    for h in range(n_heads):
        k = x @ Wk[:, h * d_h : (h + 1) * d_h]                             # (N, d_h)
        logits[h] = k @ k.T / math.sqrt(d_h)
    if pos is None:
        return logits
    if w is None:
        raise ValueError("w: expected the (C,) channel weights when pos is given, got None")
    pos, w = np.asarray(pos, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if pos.shape[:2] != (x.shape[0], x.shape[0]) or pos.ndim != 3:
        raise ValueError(f"pos: expected shape ({x.shape[0]}, {x.shape[0]}, C), got {pos.shape}")
    if w.shape != pos.shape[-1:]:
        raise ValueError(f"w: expected shape ({pos.shape[-1]},) (one weight per channel of pos), got {w.shape}")
    return w.sum() * logits + (pos @ w)[None] + b


def kv_attention_np(
    x: np.ndarray, Wk: np.ndarray, Wv: np.ndarray, n_heads: int, pos: np.ndarray | None = None,
    w: np.ndarray | None = None, b: float = 0.0,
) -> np.ndarray:
    """Key-value attention of one sequence: (N, H·d_v), heads side by side, float64.

    x (N, d); Wk (d, H·d_h); Wv (d, H·d_v). A_h = softmax_row(S'_h) from :func:`kv_logits_np`;
    out_h = A_h (x Wv_h). No output projection.
    """
    x, Wv = np.asarray(x, dtype=np.float64), np.asarray(Wv, dtype=np.float64)
    logits = kv_logits_np(x, Wk, n_heads, pos, w, b)
    check_ndim("Wv", Wv, "d, H·d_v")
    if Wv.shape[0] != x.shape[1] or Wv.shape[1] % n_heads:
        raise ValueError(f"Wv: expected shape ({x.shape[1]}, a multiple of n_heads = {n_heads}), got {Wv.shape}")
    d_v = Wv.shape[1] // n_heads
    out = np.empty((logits.shape[1], Wv.shape[1]))
    for h in range(n_heads):
        s = logits[h] - logits[h].max(axis=-1, keepdims=True)              # stable softmax
        a = np.exp(s) / np.exp(s).sum(axis=-1, keepdims=True)
        out[:, h * d_v : (h + 1) * d_v] = a @ (x @ Wv[:, h * d_v : (h + 1) * d_v])
    return out


class KVSelfAttention(nn.Module):
    """Key-value self-attention: x (B, N, d_model) → (B, N, d_model); no query projection.

    K, V = split(x W_KV + b_KV) (one fused Linear d → 2d), H heads of d_h = d/H. Without positions,
    O_h = softmax(K_h K_hᵀ/√d_h) V_h. With ``positional``, a learned map (w ∈ R^C, b) per layer gives
    O_h = softmax(σ K_h K_hᵀ/√d_h + B) V_h with σ = Σw and B = P·w + b (N, N), shared by the heads.
    Both run :func:`lib.attention.flash_attention` with the key (times σ) in the query's place and B
    as its additive bias. The code P (N, N, C) is built once per length, device and dtype and cached;
    B is recomputed each call (N²·C flops) because w learns. Output: merge(O) W_O + b_O.
    Initialization of (w, b) is ours: w = 1/C, b = 0, so σ starts at 1 (the paper's code draws w at
    random, which starts σ at a random value and sign).
    """

    def __init__(self, d_model: int, n_heads: int, positional: bool = False, channels: int = POS_CHANNELS) -> None:
        super().__init__()
        check_heads(d_model, n_heads)
        if not isinstance(positional, bool):
            raise ValueError(f"positional: expected a bool, got {positional!r}")
        check_positive_int("channels", channels)
        self.d_model, self.n_heads = d_model, n_heads
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.pos_map = nn.Linear(channels, 1) if positional else None
        if self.pos_map is not None:  # σ = Σw starts at 1: the plain KV logits plus a mild positional bias
            nn.init.constant_(self.pos_map.weight, 1.0 / channels)
            nn.init.zeros_(self.pos_map.bias)
        self._codes: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def code(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The cached pair code P: (n, n, C) on ``device`` in ``dtype`` (:func:`pos_encoding_2d`)."""
        key = (n, device, dtype)
        if key not in self._codes:
            channels = self.pos_map.in_features
            self._codes[key] = torch.from_numpy(pos_encoding_2d(n, channels)).to(device=device, dtype=dtype)
        return self._codes[key]

    def positional_terms(self, n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """σ = Σ_c w_c (a 0-d tensor) and the bias B = P·w + b: (n, n)."""
        code = self.code(n, device, dtype)
        return self.pos_map.weight.sum(), self.pos_map(code).squeeze(-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The materialized logits S (or S'), (B, H, N, N): for inspection and tests, not for forward."""
        check_sequence("x", x, self.d_model)
        k, _ = (split_heads(t, self.n_heads) for t in self.kv(x).chunk(2, dim=-1))
        s = k @ k.transpose(-1, -2) / math.sqrt(k.shape[-1])
        if self.pos_map is None:
            return s
        sigma, bias = self.positional_terms(x.shape[1], x.device, x.dtype)
        return sigma * s + bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sequence("x", x, self.d_model)
        k, v = (split_heads(t, self.n_heads) for t in self.kv(x).chunk(2, dim=-1))
        if self.pos_map is None:
            o = flash_attention(k, k, v)
        else:
            sigma, bias = self.positional_terms(x.shape[1], x.device, x.dtype)
            o = flash_attention(sigma * k, k, v, bias=bias)
        return self.out(merge_heads(o))
