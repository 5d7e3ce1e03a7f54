"""FlashAttention-2 in Triton (section 01.1): exact attention without the N×N score matrix.

Per (batch, head), with q: (Nq, d), k, v: (Nk, d) and scale s,

    S = s·q kᵀ (+ bias, masked to -inf),   P = softmax_row(S),   O = P v,   L = logsumexp_row(S).

Kernels (one program per tile of one (batch, head); grid axis 1 is B·H):

* :func:`_fwd_kernel` — grid (cdiv(Nq, BLOCK_M), B·H). A query tile stays in registers while key and
  value tiles stream past it; the running row maximum m, row sum ℓ and accumulator Acc live in fp32.
  Scores are kept in base 2 (log2 e is folded into the scale, so ``exp2`` replaces ``exp``). At the
  end O = Acc / ℓ and L = m + log ℓ are stored, nothing else.
* :func:`_bwd_preprocess` — D = rowsum(dO ∘ O), one float per query row.
* :func:`_bwd_dkdv_kernel` — grid (cdiv(Nk, BLOCK_N), B·H): one key tile per program, looping over
  the query tiles that can see it, recomputing P = exp(S - L) from the stored L.
* :func:`_bwd_dq_kernel` — grid (cdiv(Nq, BLOCK_M), B·H): one query tile per program, recomputing P
  again. FA2 instead adds dQ with fp32 atomics from the dK/dV kernel; a second kernel costs one more
  recomputation of S but makes dQ deterministic (same bits on every run).

Masks. Queries are the last Nq of Nk positions: query row i sits at position i + (Nk - Nq). Key j is
visible to the query at position p when j ≤ p (``causal``) and, with a ``window`` w, when
p - w < j < p + w (one-sided p - w < j ≤ p when causal), or j < ``n_sink``, or p < ``n_sink``: the
sinks are global tokens that see and are seen by everything. Tiles that lie wholly outside (above
the diagonal, outside the window and away from the sinks) are never loaded: the loops start and
stop at the visible range.
A row that sees no key gets O = 0 and L = -inf (the "-inf guard": the exponent shift is 0 while the
running max is still -inf, so exp2 gives 0, not NaN).

Memory traffic (elements, per (batch, head), T_m = cdiv(Nq, BLOCK_M) query tiles, T_n key tiles):

* forward: read q once (Nq·d), k and v once per query tile (2·T_m·Nk·d), write O (Nq·d) and L (Nq);
  the N×N matrices S and P never reach memory, against ≥ 2·Nq·Nk reads and writes for unfused
  attention. Causal halves the k/v term.
* backward: preprocess reads O, dO (2·Nq·d); dK/dV reads k, v once and q, dO, L, D once per key
  tile (2·T_n·Nq·d); dQ reads q, dO once and k, v once per query tile (2·T_m·Nk·d); writes dq, dk,
  dv once each. Extra memory beyond inputs and outputs: L and D, 2·Nq floats.

Under Triton's CPU interpreter one small configuration runs (16×16 tiles); on a GPU the forward
kernel picks its tiles with ``triton.autotune`` keyed on (Nq, Nk, d, the hooks, causal, dtype), among
the tiles that compile for sm_90 without register spills (:func:`fwd_tiles_without_spills`), and the
backward kernels use :func:`bwd_tile`; ``tests/test_gpu_compile.py`` checks both without a GPU. ``STABLE_MAX`` (section 01.2)
changes only the forward shift; the backward pass needs nothing, since L is the same logsumexp.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from lib.device import interpreting
from lib.validation import check_dtype, check_ndim, check_same_device, check_tensor

__all__ = [
    "KERNEL_DTYPES",
    "MAX_HEAD_DIM",
    "STABLE_BETA",
    "STABLE_TAU",
    "bwd_tile",
    "flash_attn_backward",
    "flash_attn_forward",
    "fwd_tiles_without_spills",
]

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128
"""Largest head dimension: a (BLOCK_M, 128) fp32 accumulator is what one program holds comfortably."""

STABLE_BETA = 2.0
"""β of the 01.2 stable max: a tied positive row max m is replaced by the shift β·m (the authors' code uses 2)."""
STABLE_TAU = 1e-3
"""τ of the 01.2 stable max (natural-log score units): scores ≥ m - τ count as ties of the row max m.
1e-3 as in the authors' code: near-ties also round P̃ to exactly 1 in bf16 (spacing 2^-8 below 1)."""

LOG2E = 1.4426950408889634  # log2(e): exp(x) = exp2(x·log2 e)
LN2 = 0.6931471805599453  # ln 2: log(x) = log2(x)·ln 2


# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------


@triton.jit
def _visible(pos_m, offs_m, offs_n, Nq, Nk,
             CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, WINDOW: tl.constexpr, N_SINK: tl.constexpr):
    """(BLOCK_M, BLOCK_N) bool: query row offs_m (at position pos_m) may attend to key offs_n.

    Causal: j ≤ p. Window w: p − w < j < p + w (with causal, p − w < j ≤ p), or j < N_SINK, or
    p < N_SINK (the sinks are global tokens).
    """
    p = pos_m[:, None]
    j = offs_n[None, :]
    ok = (offs_m[:, None] < Nq) & (j < Nk)
    if CAUSAL:
        ok = ok & (j <= p)
    if HAS_WINDOW:
        ok = ok & (((j > p - WINDOW) & (j < p + WINDOW)) | (j < N_SINK) | (p < N_SINK))
    return ok


@triton.jit
def _scores(q, k, bias_base, stride_bm, stride_bn, pos_m, offs_m, offs_n, Nq, Nk, qk_scale,
            HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
            WINDOW: tl.constexpr, N_SINK: tl.constexpr, PRECISION: tl.constexpr):
    """Base-2 scores S·log2 e of a (BLOCK_M, BLOCK_N) tile in fp32, -inf where masked.

    q: (BLOCK_M, BLOCK_D), k: (BLOCK_N, BLOCK_D); padded head-dim lanes are 0 and add nothing.
    """
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    if HAS_BIAS:
        b_mask = (offs_m[:, None] < Nq) & (offs_n[None, :] < Nk)
        b = tl.load(bias_base + offs_m[:, None] * stride_bm + offs_n[None, :] * stride_bn, mask=b_mask, other=0.0)
        s += b.to(tl.float32) * 1.4426950408889634
    ok = _visible(pos_m, offs_m, offs_n, Nq, Nk, CAUSAL, HAS_WINDOW, WINDOW, N_SINK)
    return tl.where(ok, s, float("-inf"))


@triton.jit
def _query_key_range(m_start, Nk, q_offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, WINDOW: tl.constexpr,
                     N_SINK: tl.constexpr):
    """Key tiles a query tile starting at row m_start must visit: sinks [0, sink_hi), then [lo, hi).

    Causal: stop at the diagonal. Window: start at the tile of the first query's first key and,
    two-sided, stop after the last query's last key; a tile holding a sink query visits every key.
    """
    first_pos = m_start + q_offset
    last_pos = m_start + BLOCK_M - 1 + q_offset
    hi = Nk
    if CAUSAL:
        hi = tl.maximum(tl.minimum(Nk, last_pos + 1), 0)  # stop at the diagonal
    lo = 0
    sink_hi = 0
    if HAS_WINDOW:
        global_query = first_pos < N_SINK  # a sink query sees every key
        lo = tl.where(global_query, 0, tl.maximum(first_pos - WINDOW + 1, 0) // BLOCK_N * BLOCK_N)
        if not CAUSAL:
            hi = tl.where(global_query, Nk, tl.maximum(tl.minimum(Nk, last_pos + WINDOW), 0))
        sink_hi = tl.minimum((N_SINK + BLOCK_N - 1) // BLOCK_N * BLOCK_N, lo)
        sink_hi = tl.minimum(sink_hi, hi)
    return sink_hi, lo, hi


# --------------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _fwd_tiles(acc, m_i, l_i, q, k_base, v_base, bias_base, start, stop,
               stride_kn, stride_kd, stride_vn, stride_vd, stride_bm, stride_bn,
               pos_m, offs_m, offs_d, Nq, Nk, D, qk_scale,
               BLOCK_N: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr,
               HAS_WINDOW: tl.constexpr, WINDOW: tl.constexpr, N_SINK: tl.constexpr,
               PRECISION: tl.constexpr, STABLE_MAX: tl.constexpr, STABLE_BETA: tl.constexpr,
               STABLE_TAU: tl.constexpr):
    """Fold key/value tiles [start, stop) into the running state (Acc, m, ℓ) of one query tile.

    m' = max(m, rowmax S);  α = 2^(m - m');  P̃ = 2^(S - m');  ℓ ← αℓ + rowsum P̃;  Acc ← αAcc + P̃V.
    With STABLE_MAX, m is a running shift c (≥ every score seen): the tile's shift is β·rowmax when at
    least two scores lie within τ of a positive row max, 0 when the tied max is negative, else rowmax.
    """
    d_mask = offs_d < D
    for start_n in range(start, stop, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < Nk) & d_mask[None, :]
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
        s = _scores(q, k, bias_base, stride_bm, stride_bn, pos_m, offs_m, offs_n, Nq, Nk, qk_scale,
                    HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION)
        m_tile = tl.max(s, axis=1)
        if STABLE_MAX:  # 01.2: with ≥ 2 near-max scores, shift past the max so no P̃ equals exactly 1
            ties = tl.sum(((s >= (m_tile - STABLE_TAU)[:, None]) & (s > float("-inf"))).to(tl.int32), axis=1)
            c_tile = tl.where(ties >= 2, tl.where(m_tile > 0, STABLE_BETA * m_tile, 0.0), m_tile)
            m_new = tl.maximum(m_i, c_tile)  # non-decreasing shifts keep the online update exact
        else:
            m_new = tl.maximum(m_i, m_tile)
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # -inf guard: rows that saw nothing yet
        alpha = tl.math.exp2(m_i - shift)
        p = tl.math.exp2(s - shift[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _fwd_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, o_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_bb, stride_bh, stride_bm, stride_bn,
    stride_ob, stride_oh, stride_om, stride_od,
    H, Nq, Nk, D, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    WINDOW: tl.constexpr, N_SINK: tl.constexpr, PRECISION: tl.constexpr,
    STABLE_MAX: tl.constexpr, STABLE_BETA: tl.constexpr, STABLE_TAU: tl.constexpr,
):
    """O[m-tile] = softmax(s·Q Kᵀ + bias) V and L = logsumexp for one query tile of one (b, h).

    q: (B, H, Nq, D), k, v: (B, H, Nk, D), o: (B, H, Nq, D), lse: (B, H, Nq) fp32 contiguous.
    ``qk_scale`` is s·log2 e; the head dim is padded to BLOCK_D ≥ D with masked loads.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    m_start = pid_m * BLOCK_M
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_offset = Nk - Nq
    pos_m = offs_m + q_offset
    q_mask = (offs_m[:, None] < Nq) & (offs_d[None, :] < D)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=q_mask, other=0.0)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    bias_base = bias_ptr + b * stride_bb + h * stride_bh

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    sink_hi, lo, hi = _query_key_range(m_start, Nk, q_offset, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW, WINDOW, N_SINK)
    if HAS_WINDOW:  # the sink tiles before the window (empty when the window reaches them)
        acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, k_base, v_base, bias_base, 0, sink_hi,
                                   stride_kn, stride_kd, stride_vn, stride_vd, stride_bm, stride_bn,
                                   pos_m, offs_m, offs_d, Nq, Nk, D, qk_scale,
                                   BLOCK_N, HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION,
                                   STABLE_MAX, STABLE_BETA, STABLE_TAU)
    acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, k_base, v_base, bias_base, lo, hi,
                               stride_kn, stride_kd, stride_vn, stride_vd, stride_bm, stride_bn,
                               pos_m, offs_m, offs_d, Nq, Nk, D, qk_scale,
                               BLOCK_N, HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION,
                               STABLE_MAX, STABLE_BETA, STABLE_TAU)

    empty = l_i == 0.0  # a fully masked row: O = 0, L = -inf
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
    tl.store(o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
             o.to(o_ptr.dtype.element_ty), mask=q_mask)
    tl.store(lse_ptr + pid_bh.to(tl.int64) * Nq + offs_m, lse, mask=offs_m < Nq)


_FWD_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
    for bm, bn, w, st in [(64, 64, 8, 3), (128, 64, 8, 2), (64, 32, 4, 3), (32, 32, 4, 2), (64, 32, 8, 2),
                          (16, 16, 4, 2)]
]
_HALF_TILES = {(64, 64, 8), (128, 64, 8), (64, 32, 4), (32, 32, 4)}


def fwd_tiles_without_spills(fp32: bool, block_d: int, hooks: bool) -> set[tuple[int, int, int]]:
    """The (BLOCK_M, BLOCK_N, warps) of the forward that compile for sm_90 without register spills.

    Measured with ``lib.gpu_compile`` (bytes spilled per thread, worst case of causal + the hooks):
    fp16/bf16 without bias, window or stable max: none of the four tiles spills. With the hooks,
    128×64 spills (408 B at d = 64, 728 B at d = 128), and at d = 128 so do 64×64 (48 B) and 64×32
    with 4 warps (104 B), while 64×32 with 8 warps and 32×32 do not. fp32 multiplies without tensor
    cores (``ieee``) and spills almost everywhere: 32×32 is clean at d = 64, only 16×16 at d = 128.
    ``tests/test_gpu_compile.py`` re-checks every tile this returns.
    """
    if fp32:
        return {(32, 32, 4)} if block_d <= 64 else {(16, 16, 4)}
    if not hooks:
        return set(_HALF_TILES)
    return _HALF_TILES - {(128, 64, 8)} if block_d <= 64 else {(64, 32, 8), (32, 32, 4)}


def _prune_fwd_configs(configs: list, named_args: dict, **kwargs) -> list:
    """Autotune's early prune: keep the configs of :func:`fwd_tiles_without_spills` for this call."""
    keep = fwd_tiles_without_spills(
        named_args["q_ptr"].dtype == torch.float32, kwargs["BLOCK_D"],
        bool(kwargs["HAS_BIAS"] or kwargs["HAS_WINDOW"] or kwargs["STABLE_MAX"]),
    )
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) in keep]


def bwd_tile(fp32: bool, block_d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, warps) of the three backward kernels on a GPU.

    Measured with ``lib.gpu_compile`` on sm_90 (with causal, bias and window): fp16/bf16 64×64 with
    8 warps at d ≤ 64 (dK/dV 231 registers, dQ 203, no spills) and 32×32 with 4 warps at d = 128
    (64×32 spills 72 B in dK/dV); fp32 32×32 at d ≤ 64 and 16×16 at d = 128 (dQ spills 824 B at 32×32).
    The fp32 dK/dV kernel spills at every tile (3.7 KB at 16×16: its ``ieee`` dots run without tensor
    cores); it is correct, and fp32 is the GPU's testing dtype, not its fast path.
    """
    if fp32:
        return (32, 32, 4) if block_d <= 64 else (16, 16, 4)
    return (64, 64, 8) if block_d <= 64 else (32, 32, 4)


_fwd_kernel_tuned = triton.autotune(
    configs=_FWD_CONFIGS, key=["Nq", "Nk", "D", "HAS_BIAS", "HAS_WINDOW", "STABLE_MAX", "CAUSAL"],
    prune_configs_by={"early_config_prune": _prune_fwd_configs},
)(_fwd_kernel)
"""The forward kernel on a GPU: among the tiles that do not spill, the fastest by timing, once per
(Nq, Nk, d, hooks, causal, dtype). Never interpreted."""

_INTERPRETER_BLOCK = 16
"""Tile size under the CPU interpreter: small, so that tests with N ≤ 128 cross several tiles."""


# --------------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _bwd_preprocess(
    o_ptr, do_ptr, delta_ptr,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_db, stride_dh, stride_dm, stride_dd,
    H, Nq, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """D_i = Σ_c dO[i, c]·O[i, c] in fp32 for one query tile: the diagonal term of the softmax Jacobian."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < Nq) & (offs_d[None, :] < D)
    o = tl.load(o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(do_ptr + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(delta_ptr + pid_bh.to(tl.int64) * Nq + offs_m, tl.sum(o * do, axis=1), mask=offs_m < Nq)


@triton.jit
def _load_rows(base, offs_m, offs_d, stride_m, stride_d, Nq, D):
    mask = (offs_m[:, None] < Nq) & (offs_d[None, :] < D)
    return tl.load(base + offs_m[:, None] * stride_m + offs_d[None, :] * stride_d, mask=mask, other=0.0)


@triton.jit
def _probabilities(s, lse_ptr, offs_m, Nq):
    """P = 2^(S·log2 e - L·log2 e) from base-2 scores s and the stored natural-log L (0 where masked)."""
    lse = tl.load(lse_ptr + offs_m, mask=offs_m < Nq, other=0.0) * 1.4426950408889634
    lse = tl.where(lse == float("-inf"), 0.0, lse)  # fully masked rows: every s is -inf, P = 0
    return tl.math.exp2(s - lse[:, None])


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_base, do_base, bias_base, lse_base, delta_base, start, stop,
                stride_qm, stride_qd, stride_dom, stride_dod, stride_bm, stride_bn,
                offs_n, offs_d, q_offset, Nq, Nk, D, qk_scale,
                BLOCK_M: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr,
                HAS_WINDOW: tl.constexpr, WINDOW: tl.constexpr, N_SINK: tl.constexpr,
                PRECISION: tl.constexpr):
    """dV += Σ_i P_iᵀ dO_i and dK += Σ_i dS_iᵀ Q_i over query tiles [start, stop) (s applied by the caller)."""
    for m_start in range(start, stop, BLOCK_M):
        offs_m = m_start + tl.arange(0, BLOCK_M)
        pos_m = offs_m + q_offset
        q = _load_rows(q_base, offs_m, offs_d, stride_qm, stride_qd, Nq, D)
        do = _load_rows(do_base, offs_m, offs_d, stride_dom, stride_dod, Nq, D)
        s = _scores(q, k, bias_base, stride_bm, stride_bn, pos_m, offs_m, offs_n, Nq, Nk, qk_scale,
                    HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION)
        p = _probabilities(s, lse_base, offs_m, Nq)                                    # (BLOCK_M, BLOCK_N)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        delta = tl.load(delta_base + offs_m, mask=offs_m < Nq, other=0.0)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _key_query_range(n_start, Nq, q_offset, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, WINDOW: tl.constexpr,
                     N_SINK: tl.constexpr):
    """Query tiles that see the key tile starting at n_start: global queries [0, sink_hi), then [lo, hi).

    Causal: from the first query at or after the tile's first key. Window: up to the last query whose
    window reaches the tile's last key and, two-sided, from the first query whose window reaches its
    first key, plus the sink (global) queries; a tile holding a sink key is seen by every query.
    """
    lo = 0
    hi = Nq
    sink_hi = 0
    if CAUSAL:
        lo = tl.maximum(n_start - q_offset, 0) // BLOCK_M * BLOCK_M
    if HAS_WINDOW:
        sink_key = n_start < N_SINK
        hi = tl.where(sink_key, Nq, tl.maximum(tl.minimum(Nq, n_start + BLOCK_N - 1 + WINDOW - q_offset), 0))
        if not CAUSAL:
            lo = tl.where(sink_key, 0, tl.maximum(n_start - WINDOW + 1 - q_offset, 0) // BLOCK_M * BLOCK_M)
            n_global = tl.maximum(N_SINK - q_offset, 0)  # rows of the sink queries
            sink_hi = tl.minimum((n_global + BLOCK_M - 1) // BLOCK_M * BLOCK_M, lo)
    return sink_hi, lo, hi


@triton.jit
def _bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_bb, stride_bh, stride_bm, stride_bn,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    H, Nq, Nk, D, qk_scale, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    WINDOW: tl.constexpr, N_SINK: tl.constexpr, PRECISION: tl.constexpr,
):
    """dK_j = s·Σ_i dS_ijᵀ Q_i and dV_j = Σ_i P_ijᵀ dO_i for one key tile j, over the query tiles i that see it.

    P = exp(S - L), dP = dO Vᵀ, dS = P ∘ (dP - D). Query tiles wholly before the diagonal (causal) or
    wholly outside the window (unless the key tile holds sinks or the query tile global queries) are skipped.
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    n_start = pid_n * BLOCK_N
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_offset = Nk - Nq
    k = _load_rows(k_ptr + b * stride_kb + h * stride_kh, offs_n, offs_d, stride_kn, stride_kd, Nk, D)
    v = _load_rows(v_ptr + b * stride_vb + h * stride_vh, offs_n, offs_d, stride_vn, stride_vd, Nk, D)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    do_base = do_ptr + b * stride_dob + h * stride_doh
    bias_base = bias_ptr + b * stride_bb + h * stride_bh
    lse_base = lse_ptr + pid_bh.to(tl.int64) * Nq
    delta_base = delta_ptr + pid_bh.to(tl.int64) * Nq

    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    sink_hi, lo, hi = _key_query_range(n_start, Nq, q_offset, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW, WINDOW, N_SINK)
    if HAS_WINDOW:  # the global query tiles before the window (empty when causal or when the window reaches them)
        dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, bias_base, lse_base, delta_base, 0, sink_hi,
                             stride_qm, stride_qd, stride_dom, stride_dod, stride_bm, stride_bn,
                             offs_n, offs_d, q_offset, Nq, Nk, D, qk_scale,
                             BLOCK_M, HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION)
    dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, bias_base, lse_base, delta_base, lo, hi,
                         stride_qm, stride_qd, stride_dom, stride_dod, stride_bm, stride_bn,
                         offs_n, offs_d, q_offset, Nq, Nk, D, qk_scale,
                         BLOCK_M, HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION)
    dk = dk * scale
    mask = (offs_n[:, None] < Nk) & (offs_d[None, :] < D)
    tl.store(dk_ptr + b * stride_dkb + h * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(dk_ptr.dtype.element_ty), mask=mask)
    tl.store(dv_ptr + b * stride_dvb + h * stride_dvh + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(dv_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dq_tiles(dq, q, do, delta, k_base, v_base, bias_base, lse_base, start, stop,
              stride_kn, stride_kd, stride_vn, stride_vd, stride_bm, stride_bn,
              pos_m, offs_m, offs_d, Nq, Nk, D, qk_scale,
              BLOCK_N: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr,
              HAS_WINDOW: tl.constexpr, WINDOW: tl.constexpr, N_SINK: tl.constexpr,
              PRECISION: tl.constexpr):
    """dQ += Σ_j dS_ij K_j over key tiles [start, stop) (the factor s is applied by the caller)."""
    for start_n in range(start, stop, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(k_base, offs_n, offs_d, stride_kn, stride_kd, Nk, D)
        v = _load_rows(v_base, offs_n, offs_d, stride_vn, stride_vd, Nk, D)
        s = _scores(q, k, bias_base, stride_bm, stride_bn, pos_m, offs_m, offs_n, Nq, Nk, qk_scale,
                    HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION)
        p = _probabilities(s, lse_base, offs_m, Nq)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    return dq


@triton.jit
def _bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_bb, stride_bh, stride_bm, stride_bn,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    H, Nq, Nk, D, qk_scale, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    WINDOW: tl.constexpr, N_SINK: tl.constexpr, PRECISION: tl.constexpr,
):
    """dQ_i = s·Σ_j dS_ij K_j for one query tile i, visiting the same key tiles as the forward pass."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    m_start = pid_m * BLOCK_M
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_offset = Nk - Nq
    pos_m = offs_m + q_offset
    q = _load_rows(q_ptr + b * stride_qb + h * stride_qh, offs_m, offs_d, stride_qm, stride_qd, Nq, D)
    do = _load_rows(do_ptr + b * stride_dob + h * stride_doh, offs_m, offs_d, stride_dom, stride_dod, Nq, D)
    lse_base = lse_ptr + pid_bh.to(tl.int64) * Nq
    delta = tl.load(delta_ptr + pid_bh.to(tl.int64) * Nq + offs_m, mask=offs_m < Nq, other=0.0)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    bias_base = bias_ptr + b * stride_bb + h * stride_bh

    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    sink_hi, lo, hi = _query_key_range(m_start, Nk, q_offset, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW, WINDOW, N_SINK)
    if HAS_WINDOW:
        dq = _dq_tiles(dq, q, do, delta, k_base, v_base, bias_base, lse_base, 0, sink_hi,
                       stride_kn, stride_kd, stride_vn, stride_vd, stride_bm, stride_bn,
                       pos_m, offs_m, offs_d, Nq, Nk, D, qk_scale,
                       BLOCK_N, HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION)
    dq = _dq_tiles(dq, q, do, delta, k_base, v_base, bias_base, lse_base, lo, hi,
                   stride_kn, stride_kd, stride_vn, stride_vd, stride_bm, stride_bn,
                   pos_m, offs_m, offs_d, Nq, Nk, D, qk_scale,
                   BLOCK_N, HAS_BIAS, CAUSAL, HAS_WINDOW, WINDOW, N_SINK, PRECISION)
    dq = dq * scale
    mask = (offs_m[:, None] < Nq) & (offs_d[None, :] < D)
    tl.store(dq_ptr + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
             dq.to(dq_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t)
        check_ndim(name, t, "B, H, N, d")
        check_dtype(name, t, KERNEL_DTYPES)
        if 0 in t.shape:
            raise ValueError(f"{name}: expected non-empty dimensions, got shape {tuple(t.shape)}")
    for name, t in (("k", k), ("v", v)):
        check_same_device(name, t, "q", q)
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected the dtype of q ({q.dtype}), got {t.dtype}")
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"k: expected shape (B, H, Nk, d) = {tuple(q.shape[:2])} + (Nk, {q.shape[3]}), got {tuple(k.shape)}")
    if q.shape[3] > MAX_HEAD_DIM:
        raise ValueError(f"q: expected a head dimension d ≤ {MAX_HEAD_DIM}, got {q.shape[3]}")


def _check_options(scale, window, n_sink) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: expected a positive finite float, got {scale!r}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"window: expected None or a positive int, got {window!r}")
    if isinstance(n_sink, bool) or not isinstance(n_sink, int) or n_sink < 0:
        raise ValueError(f"n_sink: expected a non-negative int, got {n_sink!r}")


def _bias_view(bias, q: torch.Tensor, Nk: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """(tensor, strides) of the bias broadcast to (B, H, Nq, Nk): stride 0 on broadcast axes, no copy."""
    B, H, Nq, _ = q.shape
    if bias is None:
        return q, (0, 0, 0, 0)  # never read: HAS_BIAS is off
    check_tensor("bias", bias)
    check_dtype("bias", bias, KERNEL_DTYPES)
    check_same_device("bias", bias, "q", q)
    try:
        full = bias.expand(B, H, Nq, Nk)
    except RuntimeError:
        raise ValueError(f"bias: expected a shape broadcastable to (B, H, Nq, Nk) = {(B, H, Nq, Nk)}, "
                         f"got {tuple(bias.shape)}") from None
    return full, tuple(full.stride())


def _check_out(name: str, out: torch.Tensor, like: torch.Tensor) -> None:
    check_tensor(name, out)
    if tuple(out.shape) != tuple(like.shape) or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f"{name}: expected a {like.dtype} tensor of shape {tuple(like.shape)} on {like.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")


def _precision(dtype: torch.dtype) -> str:
    """fp32 inputs multiply in true fp32 (``ieee``), not TF32, so fp32 results match a float64 reference."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _common(q, k, scale, bias, window, n_sink) -> dict:
    return dict(
        BLOCK_D=max(16, triton.next_power_of_2(q.shape[3])),
        HAS_BIAS=bias is not None, HAS_WINDOW=window is not None,
        WINDOW=window if window is not None else 0, N_SINK=n_sink if window is not None else 0,
        PRECISION=_precision(q.dtype),
    )


def flash_attn_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
    causal: bool, scale: float, bias: torch.Tensor | None = None, window: int | None = None,
    n_sink: int = 0, stable_max: bool = False, out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch :func:`_fwd_kernel`: o = softmax(scale·q kᵀ + bias, masked) v and lse = logsumexp of the scores.

    q: (B, H, Nq, d), k, v: (B, H, Nk, d), d ≤ 128, fp16/bf16/fp32 (math in fp32), any strides.
    Queries are the last Nq of the Nk positions. bias: broadcastable to (B, H, Nq, Nk), additive.
    window w (with n_sink sinks): key j visible to position p iff |p - j| < w, or j < n_sink, or
    p < n_sink (global tokens); causal adds j ≤ p. ``stable_max``: the 01.2 shift (see
    :data:`STABLE_BETA`, :data:`STABLE_TAU`).
    Returns o (B, H, Nq, d) in q's dtype (``out`` if given) and
    lse (B, H, Nq) float32; a row that sees no key gets o = 0, lse = -inf.
    """
    _check_qkv(q, k, v)
    _check_options(scale, window, n_sink)
    B, H, Nq, d = q.shape
    Nk = k.shape[2]
    bias_t, bias_strides = _bias_view(bias, q, Nk)
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    else:
        _check_out("out", out, q)
    lse = torch.empty((B, H, Nq), dtype=torch.float32, device=q.device)
    meta = _common(q, k, scale, bias, window, n_sink)
    # τ in base-2 score units, like the scores; β·m scales either unit alike.
    meta.update(STABLE_MAX=bool(stable_max), STABLE_BETA=STABLE_BETA, STABLE_TAU=STABLE_TAU * LOG2E)
    args = (q, k, v, bias_t, out, lse, *q.stride(), *k.stride(), *v.stride(), *bias_strides, *out.stride(),
            H, Nq, Nk, d, float(scale) * LOG2E)
    if interpreting():
        blk = _INTERPRETER_BLOCK
        _fwd_kernel[(triton.cdiv(Nq, blk), B * H)](*args, BLOCK_M=blk, BLOCK_N=blk, CAUSAL=causal, num_warps=4, **meta)
    else:
        grid = lambda cfg: (triton.cdiv(Nq, cfg["BLOCK_M"]), B * H)  # noqa: E731
        _fwd_kernel_tuned[grid](*args, CAUSAL=causal, **meta)
    return out, lse


def flash_attn_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, do: torch.Tensor, *,
    causal: bool, scale: float, bias: torch.Tensor | None = None, window: int | None = None, n_sink: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the three backward kernels: (dq, dk, dv) of ⟨do, o⟩ for o = flash_attn_forward(...)[0].

    o, do: (B, H, Nq, d) like q; lse: (B, H, Nq) float32 from the forward pass. The bias is treated as
    a constant (no dbias). Gradients come back in the inputs' dtypes, deterministically.
    """
    _check_qkv(q, k, v)
    _check_options(scale, window, n_sink)
    B, H, Nq, d = q.shape
    Nk = k.shape[2]
    for name, t in (("o", o), ("do", do)):
        check_tensor(name, t)
        if tuple(t.shape) != tuple(q.shape) or t.device != q.device:
            raise ValueError(f"{name}: expected shape {tuple(q.shape)} on {q.device}, got {tuple(t.shape)} on {t.device}")
        check_dtype(name, t, KERNEL_DTYPES)
    check_tensor("lse", lse)
    if tuple(lse.shape) != (B, H, Nq) or lse.dtype != torch.float32 or lse.device != q.device:
        raise ValueError(f"lse: expected a float32 tensor of shape {(B, H, Nq)} on {q.device}, "
                         f"got {lse.dtype} {tuple(lse.shape)} on {lse.device}")
    lse = lse.contiguous()
    do = do.to(q.dtype)
    bias_t, bias_strides = _bias_view(bias, q, Nk)
    meta = _common(q, k, scale, bias, window, n_sink)
    if interpreting():
        bm, bn, warps = _INTERPRETER_BLOCK, _INTERPRETER_BLOCK, 4
    else:
        bm, bn, warps = bwd_tile(q.dtype == torch.float32, meta["BLOCK_D"])
    delta = torch.empty((B, H, Nq), dtype=torch.float32, device=q.device)
    _bwd_preprocess[(triton.cdiv(Nq, bm), B * H)](
        o, do, delta, *o.stride(), *do.stride(), H, Nq, d, BLOCK_M=bm, BLOCK_D=meta["BLOCK_D"], num_warps=warps
    )
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    common = (*q.stride(), *k.stride(), *v.stride(), *bias_strides, *do.stride())
    tail = (H, Nq, Nk, d, float(scale) * LOG2E, float(scale))
    _bwd_dkdv_kernel[(triton.cdiv(Nk, bn), B * H)](
        q, k, v, bias_t, do, lse, delta, dk, dv, *common, *dk.stride(), *dv.stride(), *tail,
        BLOCK_M=bm, BLOCK_N=bn, CAUSAL=causal, num_warps=warps, **meta,
    )
    _bwd_dq_kernel[(triton.cdiv(Nq, bm), B * H)](
        q, k, v, bias_t, do, lse, delta, dq, *common, *dq.stride(), *tail,
        BLOCK_M=bm, BLOCK_N=bn, CAUSAL=causal, num_warps=warps, **meta,
    )
    return dq, dk, dv
