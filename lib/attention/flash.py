"""Section 01.1 — FlashAttention-2 in blocked PyTorch, differentiable, with the hooks later sections use.

Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning",
arXiv 2307.08691 (2023).

:func:`flash_attention` streams key/value tiles past each query tile, keeping a running shift m,
sum ℓ and accumulator Acc in fp32 (float64 for float64 inputs), and stores only O and the
logsumexp L. The backward pass recomputes P = exp(S − L) tile by tile: no N×N tensor is ever kept
(except dBias, which is itself N×N, when a bias asks for a gradient). Every tile matmul is
batched over the leading dims (B, H).

Hooks: an additive ``bias`` (broadcastable to (B, H, Nq, Nk); learnable on this path), a sliding
``window`` (causal, or two-sided when not causal) with ``n_sink`` global tokens that see and are
seen by every position (tiles outside are skipped), and ``stable_max``
(section 01.2, arXiv 2510.04212): on a tile row whose maximum m is tied (at least two entries
≥ m − τ, with τ = :data:`STABLE_TAU` = 1e-3, as in the authors' code) the shift is β·m (β = :data:`STABLE_BETA`
= 2) when m > 0 and 0 when m < 0, so no tied entry gives exp(0) = 1; the running shift is
max(tile shift, previous shift). Softmax is invariant to the shift, so the result is exact either way.

CUDA tensors (fp16, bf16, fp32) run the Triton kernels of :mod:`kernels.flash_attn`, except when the
bias needs a gradient; everything else runs the PyTorch path here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lib.attention.reference import visible
from lib.device import use_kernel
from lib.softmax import safe_normalizer, safe_shift
from lib.validation import check_dtype, check_positive_int, check_tensor

__all__ = ["STABLE_BETA", "STABLE_TAU", "flash_attention", "flash_attention_with_lse", "stable_tile_shift", "tiles_visited"]

STABLE_BETA = 2.0
"""Stable-max multiplier β for a tied positive tile maximum (the paper's code uses 2)."""
STABLE_TAU = 1e-3
"""Stable-max tie tolerance τ: entries ≥ m − τ count as tied with the tile maximum m (the authors' code uses 1e-3)."""

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class _Spec:
    """Everything about one call except the tensors."""

    causal: bool
    window: int | None
    n_sink: int
    stable_max: bool
    block_m: int
    block_n: int
    scale: float


# ----------------------------------------------------------------------------- tiles and masks


def _tile_needed(r0: int, r1: int, c0: int, c1: int, n_q: int, n_k: int,
                 causal: bool, window: int | None, n_sink: int) -> bool:
    """Whether the tile of query rows [r0, r1) × keys [c0, c1) holds any visible entry.

    Queries sit at absolute positions n_k − n_q + r. Causal: the tile's first key must not lie after
    its last query. Windowed (the rule of :func:`~lib.attention.reference.visible`): the tile must
    hold a sink key, or (two-sided) a sink query, or a key within the window of one of its queries.
    """
    first_q, last_q = n_k - n_q + r0, n_k - n_q + r1 - 1
    if causal and c0 > last_q:
        return False
    if window is None or c0 < n_sink or (not causal and first_q < n_sink):
        return True
    return c1 - 1 > first_q - window and c0 < last_q + window


def tiles_visited(n_q: int, n_k: int, block_m: int, block_n: int, causal: bool = False,
                  window: int | None = None, n_sink: int = 0) -> int:
    """How many (query tile, key tile) pairs the forward pass computes; the rest are skipped.

    Full attention visits ⌈Nq/B_r⌉·⌈Nk/B_c⌉ tiles; causal with B_r = B_c about half of them; a causal
    window w about (w/B_c + 1) per query tile plus the sink tiles, a two-sided one about twice that,
    plus every key tile for the query tiles that hold a sink query.
    """
    return sum(
        _tile_needed(r0, min(r0 + block_m, n_q), c0, min(c0 + block_n, n_k), n_q, n_k,
                     causal, window, n_sink)
        for r0 in range(0, n_q, block_m)
        for c0 in range(0, n_k, block_n)
    )


def _tile_scores(q_i: torch.Tensor, k_j: torch.Tensor, bias: torch.Tensor | None,
                 r0: int, c0: int, n_q: int, n_k: int, spec: _Spec) -> torch.Tensor:
    """S_ij = s·Q_i K_jᵀ + bias tile, −inf where masked.  q_i (..., m, d), k_j (..., n, d) → (..., m, n)."""
    r1, c1 = r0 + q_i.shape[-2], c0 + k_j.shape[-2]
    s_ij = spec.scale * (q_i @ k_j.transpose(-1, -2))
    if bias is not None:
        s_ij = s_ij + bias[..., r0:r1, c0:c1].to(s_ij.dtype)
    if not _tile_unmasked(n_k - n_q + r0, c1, spec):                  # only boundary tiles pay for masking
        q_pos = torch.arange(n_k - n_q + r0, n_k - n_q + r1, device=q_i.device)[:, None]
        k_pos = torch.arange(c0, c1, device=q_i.device)[None, :]
        s_ij = s_ij.masked_fill(~visible(q_pos, k_pos, spec.causal, spec.window, spec.n_sink), float("-inf"))
    return s_ij


def _tile_unmasked(first_q: int, c1: int, spec: _Spec) -> bool:
    """Whether a visited tile needs no mask, decided from positions alone: no mask at all, or causal
    without a window with the tile's last key c1 − 1 at or before its first query (below the diagonal).
    Window tiles are masked whenever visited (the band's edges cut most of them)."""
    if spec.window is not None:
        return False
    return not spec.causal or c1 - 1 <= first_q


def _key_starts(r0: int, r1: int, n_q: int, n_k: int, spec: _Spec) -> list[int]:
    """Start of every key tile that query tile [r0, r1) visits."""
    return [
        c0 for c0 in range(0, n_k, spec.block_n)
        if _tile_needed(r0, r1, c0, min(c0 + spec.block_n, n_k), n_q, n_k,
                        spec.causal, spec.window, spec.n_sink)
    ]


# ----------------------------------------------------------------------------- forward


def stable_tile_shift(s_ij: torch.Tensor, beta: float = STABLE_BETA, tau: float = STABLE_TAU) -> torch.Tensor:
    """The stable-max shift of each tile row: β·m if m > 0 is tied, 0 if m < 0 is tied, else m.

    s_ij: (..., m, n)  →  (..., m); "tied": at least two entries ≥ m − τ. A row with no finite entry
    keeps m = −inf (the −inf guard).
    """
    m = s_ij.amax(dim=-1)
    tied = ((s_ij >= (m - tau).unsqueeze(-1)).sum(dim=-1) >= 2) & torch.isfinite(m)
    shift = torch.where(tied & (m > 0), beta * m, m)
    return torch.where(tied & (m < 0), torch.zeros_like(m), shift)


def _online_step(m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor, s_ij: torch.Tensor,
                 v_j: torch.Tensor, stable_max: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one key tile into the running state of a query tile.

    m, l: (..., m) running shift and sum; acc: (..., m, dv); s_ij: (..., m, n); v_j: (..., n, dv).

        m' = max(m, c_tile);  α = exp(m − m');  P̃ = exp(S_ij − m');  ℓ = α·ℓ + rowsum P̃;  Acc = α·Acc + P̃ V_j

    with c_tile the tile row max (or the stable-max shift); exponents use 0 while m' = −inf.
    """
    c_tile = stable_tile_shift(s_ij) if stable_max else s_ij.amax(dim=-1)
    m_new = torch.maximum(m, c_tile)
    shift = safe_shift(m_new)
    alpha = torch.exp(m - shift)
    p_tilde = torch.exp(s_ij - shift.unsqueeze(-1))
    l = alpha * l + p_tilde.sum(dim=-1)
    acc = alpha.unsqueeze(-1) * acc + p_tilde @ v_j
    return m_new, l, acc


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 running statistics, or float64 for float64 inputs (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _forward_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                   spec: _Spec) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocked forward.  q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv)  →  o (..., Nq, dv) in q's dtype,
    lse (..., Nq) in the compute dtype (−inf for fully masked rows, whose o is 0)."""
    cd = _compute_dtype(q.dtype)
    n_q, n_k = q.shape[-2], k.shape[-2]
    o = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=cd, device=q.device)
    for r0 in range(0, n_q, spec.block_m):
        r1 = min(r0 + spec.block_m, n_q)
        q_i = q[..., r0:r1, :].to(cd)
        m = torch.full(q_i.shape[:-1], float("-inf"), dtype=cd, device=q.device)
        l = torch.zeros_like(m)
        acc = torch.zeros(q_i.shape[:-1] + v.shape[-1:], dtype=cd, device=q.device)
        for c0 in _key_starts(r0, r1, n_q, n_k, spec):
            c1 = min(c0 + spec.block_n, n_k)
            s_ij = _tile_scores(q_i, k[..., c0:c1, :].to(cd), bias, r0, c0, n_q, n_k, spec)
            m, l, acc = _online_step(m, l, acc, s_ij, v[..., c0:c1, :].to(cd), spec.stable_max)
        o[..., r0:r1, :] = (acc / safe_normalizer(l).unsqueeze(-1)).to(q.dtype)
        lse[..., r0:r1] = torch.where(l > 0, m + torch.log(safe_normalizer(l)), float("-inf"))
    return o, lse


# ----------------------------------------------------------------------------- backward


def _backward_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, do: torch.Tensor,
    bias: torch.Tensor | None, spec: _Spec, want_dbias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Blocked backward recomputing P.  Returns dq, dk, dv (input dtypes) and dS (..., Nq, Nk) or None.

    D = rowsum(dO ∘ O); per key tile j, per query tile i reaching it:
    P = exp(S_ij − L_i), dV_j += Pᵀ dO_i, dP = dO_i V_jᵀ, dS = P ∘ (dP − D_i),
    dK_j += s·dSᵀ Q_i, dQ_i += s·dS K_j. Fully masked rows (L = −inf) have P = 0.
    """
    cd = _compute_dtype(q.dtype)
    n_q, n_k = q.shape[-2], k.shape[-2]
    do_c = do.to(cd)
    d_row = (do_c * o.to(cd)).sum(dim=-1, keepdim=True)                     # D: (..., Nq, 1)
    lse_inf = torch.where(torch.isneginf(lse), float("inf"), lse).unsqueeze(-1)  # exp(S − ∞) = 0
    dq = torch.zeros(q.shape, dtype=cd, device=q.device)
    dk = torch.zeros(k.shape, dtype=cd, device=q.device)
    dv = torch.zeros(v.shape, dtype=cd, device=q.device)
    ds_full = torch.zeros(q.shape[:-1] + (n_k,), dtype=cd, device=q.device) if want_dbias else None
    for c0 in range(0, n_k, spec.block_n):
        c1 = min(c0 + spec.block_n, n_k)
        k_j, v_j = k[..., c0:c1, :].to(cd), v[..., c0:c1, :].to(cd)
        for r0 in range(0, n_q, spec.block_m):
            r1 = min(r0 + spec.block_m, n_q)
            if not _tile_needed(r0, r1, c0, c1, n_q, n_k, spec.causal, spec.window, spec.n_sink):
                continue
            q_i, do_i = q[..., r0:r1, :].to(cd), do_c[..., r0:r1, :]
            p = torch.exp(_tile_scores(q_i, k_j, bias, r0, c0, n_q, n_k, spec) - lse_inf[..., r0:r1, :])
            dv[..., c0:c1, :] += p.transpose(-1, -2) @ do_i
            ds = p * (do_i @ v_j.transpose(-1, -2) - d_row[..., r0:r1, :])
            dk[..., c0:c1, :] += spec.scale * ds.transpose(-1, -2) @ q_i
            dq[..., r0:r1, :] += spec.scale * ds @ k_j
            if ds_full is not None:
                ds_full[..., r0:r1, c0:c1] = ds
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), ds_full


# ----------------------------------------------------------------------------- dispatch


def _kernel_applies(q: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The Triton kernels run on CUDA, in fp16/bf16/fp32, with a constant bias."""
    return use_kernel(q) and q.dtype in _KERNEL_DTYPES and not (bias is not None and bias.requires_grad)


def _as_4d(x: torch.Tensor) -> torch.Tensor:
    """(B, N, d) → (B, 1, N, d) for the kernels; (B, H, N, d) unchanged."""
    return x.unsqueeze(1) if x.ndim == 3 else x


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, spec: _Spec,
             on_kernel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """o (…, Nq, dv) and lse (…, Nq) from the Triton kernel or the PyTorch path."""
    if not on_kernel:
        return _forward_torch(q, k, v, bias, spec)
    from kernels.flash_attn import flash_attn_forward  # lazy: lib imports without triton

    o, lse = flash_attn_forward(
        _as_4d(q), _as_4d(k), _as_4d(v), causal=spec.causal, scale=spec.scale, bias=bias,
        window=spec.window, n_sink=spec.n_sink, stable_max=spec.stable_max,
    )
    return o.reshape(q.shape[:-1] + v.shape[-1:]), lse.reshape(q.shape[:-1])


def _backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
              do: torch.Tensor, bias: torch.Tensor | None, spec: _Spec, on_kernel: bool, want_dbias: bool):
    """dq, dk, dv and dS (or None) from the Triton kernel or, for dBias or off CUDA, the PyTorch path."""
    if want_dbias or not on_kernel:
        return _backward_torch(q, k, v, o, lse, do, bias, spec, want_dbias)
    from kernels.flash_attn import flash_attn_backward

    dq, dk, dv = flash_attn_backward(
        _as_4d(q), _as_4d(k), _as_4d(v), _as_4d(o), lse.reshape(_as_4d(q).shape[:-1]), _as_4d(do),
        causal=spec.causal, scale=spec.scale, bias=bias, window=spec.window, n_sink=spec.n_sink,
    )
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape), None


class FlashAttnFn(torch.autograd.Function):
    """O and L from the forward; the backward recomputes P from (q, k, v, o, lse) and never stores it."""

    @staticmethod
    def forward(ctx, q, k, v, bias, spec: _Spec):
        ctx.on_kernel = _kernel_applies(q, bias)                 # the backward follows the forward's choice
        o, lse = _forward(q, k, v, bias, spec, ctx.on_kernel)
        ctx.save_for_backward(q, k, v, o, lse, bias)
        ctx.spec = spec
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, o, lse, bias = ctx.saved_tensors
        want_dbias = bias is not None and ctx.needs_input_grad[3]
        dq, dk, dv, ds = _backward(q, k, v, o, lse, do.contiguous(), bias, ctx.spec, ctx.on_kernel, want_dbias)
        dbias = ds.to(bias.dtype) if want_dbias else None  # expand's backward sums broadcast dims
        return dq, dk, dv, dbias, None


# ----------------------------------------------------------------------------- validation and API


def _check_inputs(q, k, v, bias, causal, window, n_sink, block_m, block_n) -> None:
    """One-line errors naming the argument for every malformed input."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x)
        if x.ndim not in (3, 4):
            raise ValueError(
                f"{name}: expected a 3-d (B, N, d) or 4-d (B, H, N, d) tensor, got shape {tuple(x.shape)}"
            )
    check_dtype("q", q, (torch.float16, torch.bfloat16, torch.float32, torch.float64))
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} (the dtype of q), got {x.dtype}")
        if x.ndim != q.ndim or x.shape[:-2] != q.shape[:-2]:
            raise ValueError(
                f"{name}: expected leading dims {tuple(q.shape[:-2])} (those of q), got shape {tuple(x.shape)}"
            )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k: expected head dim {q.shape[-1]} (that of q), got shape {tuple(k.shape)}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v: expected {k.shape[-2]} positions (those of k), got shape {tuple(v.shape)}")
    if (causal or window is not None) and q.shape[-2] > k.shape[-2]:
        raise ValueError(
            f"q: expected at most as many queries as keys ({k.shape[-2]}) when causal or windowed, got {q.shape[-2]}"
        )
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 0):
        raise ValueError(f"window: expected None or a non-negative int, got {window!r}")
    if isinstance(n_sink, bool) or not isinstance(n_sink, int) or n_sink < 0:
        raise ValueError(f"n_sink: expected a non-negative int, got {n_sink!r}")
    check_positive_int("block_m", block_m)
    check_positive_int("block_n", block_n)
    if bias is not None:
        _check_bias(bias, q, k)


def _check_bias(bias, q: torch.Tensor, k: torch.Tensor) -> None:
    check_tensor("bias", bias)
    if not bias.is_floating_point():
        raise TypeError(f"bias: expected a floating-point tensor, got {bias.dtype}")
    target = q.shape[:-1] + (k.shape[-2],)
    try:
        fits = torch.broadcast_shapes(bias.shape, target) == target
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"bias: expected a shape broadcastable to {tuple(target)} (…, Nq, Nk), got {tuple(bias.shape)}"
        )


def flash_attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, bias: torch.Tensor | None = None,
    window: int | None = None, n_sink: int = 0, stable_max: bool = False, block_m: int = 64, block_n: int = 64,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention and its logsumexp, computed tile by tile; differentiable in q, k, v (and bias).

    q: (B, H, Nq, d) or (B, Nq, d); k: (…, Nk, d); v: (…, Nk, dv); bias: broadcastable to (…, Nq, Nk)
    →  o (…, Nq, dv) in q's dtype, lse (…, Nq) in fp32 (float64 for float64 inputs), with

        S = s·QKᵀ + bias (−inf where masked),  O = softmax(S) V,  lse = log Σ_j exp S_ij,  s = 1/√d.

    ``causal``: the Nq queries are the last Nq of Nk positions and see keys j ≤ i. ``window`` w: key j
    is visible iff i − w < j ≤ i (causal) or |i − j| < w (not causal), or j < ``n_sink``; the sink
    positions are global tokens, so a sink query i < ``n_sink`` sees every key (only j ≤ i when
    causal). Key tiles outside the window are skipped. A fully masked row gives o = 0, lse = −inf and
    zero gradients. ``stable_max``: the shift of section 01.2 (same result).
    """
    _check_inputs(q, k, v, bias, causal, window, n_sink, block_m, block_n)
    spec = _Spec(
        causal=bool(causal), window=window, n_sink=n_sink, stable_max=bool(stable_max), block_m=block_m,
        block_n=block_n, scale=q.shape[-1] ** -0.5 if scale is None else float(scale),
    )
    bias_full = None if bias is None else bias.expand(q.shape[:-1] + (k.shape[-2],))
    return FlashAttnFn.apply(q, k, v, bias_full, spec)


def flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, bias: torch.Tensor | None = None,
    window: int | None = None, n_sink: int = 0, stable_max: bool = False, block_m: int = 64, block_n: int = 64,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact attention softmax(s·QKᵀ + bias) V, tile by tile; see :func:`flash_attention_with_lse`."""
    o, _ = flash_attention_with_lse(
        q, k, v, causal=causal, bias=bias, window=window, n_sink=n_sink, stable_max=stable_max,
        block_m=block_m, block_n=block_n, scale=scale,
    )
    return o
