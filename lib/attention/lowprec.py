"""Section 01.2 — where bf16 flash attention rounds with a bias, and the stable-max shift that removes it.

Qiu and Yao, "Why Low-Precision Transformer Training Fails: An Analysis on Flash Attention",
arXiv 2510.04212 (2025).

A CPU cannot run a bf16 tensor-core kernel, so the rounding points are *emulated*: every value is
kept in float32 (or float64) and rounded to the nearest bf16 (ties to even) exactly where a bf16
kernel stores it. Per key tile j, with the running shift c, sum ℓ and accumulator Acc::

    S_j   = s·Q K_jᵀ                                (fp32)
    c'    = max(c, shift(S_j))                      shift = row max, or the stable shift (below)
    P̃_j  = bf16( exp(S_j − c') )                   the cast before the second matmul
    T_j   = bf16( P̃_j V_j )                         fp32 accumulation inside, bf16 result
    Acc   = acc( e^{c − c'} Acc + T_j )             acc = bf16 or fp32 (the accumulator's dtype)
    ℓ     = e^{c − c'} ℓ + rowsum(P̃_j)             fp32
    O     = Acc / ℓ,  lse = c + log ℓ               (a kernel then stores O in bf16: one more, unbiased rounding)

Why this is biased. When k ≥ 2 scores of a row tie at the maximum, P̃ holds k exact ones and T is
v_a + v_b + … (exact, and for k = 2 often a bf16 half-way point) plus small terms P̃_j v_j. If V's
features share a sign, the small terms push every such half-way case the same way, so the rounding of
T stops being zero-mean: O, and D = rowsum(dO ∘ O) in the backward pass, carry a signed error.

The stable shift (the paper's fix): on a tile row with ≥ 2 scores within τ of its max m, shift by
β·m if m > 0 and by 0 if m < 0 (otherwise by m). No tied score then gives exp(0) = 1, the ones
disappear, and with them the half-way structure. Softmax is shift-invariant, so in exact arithmetic
the result is unchanged (an online shift only has to be non-decreasing). The authors' code uses
β = 2 and τ = 1e-3 (:data:`lib.attention.flash.STABLE_BETA` and ``STABLE_TAU``, shared with
the blocked path and the Triton kernel).
"""

from __future__ import annotations

import numpy as np
import torch

from lib.attention.flash import STABLE_BETA, STABLE_TAU, stable_tile_shift
from lib.validation import check_choice, check_int_in_range, check_positive_int, check_tensor

__all__ = [
    "bf16_round",
    "flash_attention_bf16",
    "flash_fwd_lowprec_np",
    "reference_stable_shift",
    "sample_tied_inputs",
    "signed_error",
    "stable_shift",
]

_ACCUMULATORS = ("fp32", "bf16")


# ----------------------------------------------------------------------------- NumPy references


def bf16_round(x: np.ndarray) -> np.ndarray:
    """Round to the nearest bfloat16 (ties to even), kept as float32.  Any shape → same shape, float32.

    bf16 is the top 16 bits of a float32. Adding 0x7FFF plus the lowest kept bit, then clearing the
    low 16 bits, rounds the 16 dropped bits to nearest with ties to an even kept bit. NaN stays NaN;
    ±inf stays ±inf; values past the largest bf16 round to ±inf, as a hardware cast does.
    """
    x32 = np.asarray(x, dtype=np.float32)
    bits = x32.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x32), x32, out)


def reference_stable_shift(s_tile: np.ndarray, m_prev: np.ndarray, beta: float = STABLE_BETA,
                           tau: float = STABLE_TAU) -> np.ndarray:
    """The running shift after one tile with the stable max: c = max(c_tile, m_prev).

    s_tile: (rows, n) scores (−inf where masked), m_prev: (rows,) the previous shift (−inf at first)
    → (rows,). With m the tile row max and t = #{s ≥ m − τ}: c_tile = β·m if t ≥ 2 and m > 0,
    0 if t ≥ 2 and m < 0, else m. A row with no finite score keeps c_tile = −inf.
    """
    m = s_tile.max(axis=-1)
    tied = ((s_tile >= (m - tau)[:, None]).sum(axis=-1) >= 2) & np.isfinite(m)
    c_tile = np.where(tied & (m > 0), beta * m, np.where(tied & (m < 0), 0.0, m))
    return np.maximum(c_tile, m_prev)


def flash_fwd_lowprec_np(q: np.ndarray, k: np.ndarray, v: np.ndarray, block_n: int = 64, acc: str = "fp32",
                         stable: bool = False, beta: float = STABLE_BETA, tau: float = STABLE_TAU,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Flash attention forward with bf16 rounding emulated where a bf16 kernel rounds (module docstring).

    q: (Nq, d), k: (Nk, d), v: (Nk, dv), bf16-representable float32 values  →  o (Nq, dv), lse (Nq,),
    float32. One head, no mask. ``o`` is returned before the kernel's final bf16 store, so that the
    errors measured are those of the tile loop. ``acc``: the accumulator's dtype, "fp32" (a
    FlashAttention-2 kernel keeps it in registers) or "bf16" (a kernel written with bf16 tensors).
    """
    check_choice("acc", acc, _ACCUMULATORS)
    q, k, v = (np.asarray(a, dtype=np.float32) for a in (q, k, v))
    scale = np.float32(1.0 / np.sqrt(q.shape[-1]))
    c = np.full(q.shape[0], -np.inf, dtype=np.float32)
    ell = np.zeros(q.shape[0], dtype=np.float32)
    accumulator = np.zeros((q.shape[0], v.shape[-1]), dtype=np.float32)
    for start in range(0, k.shape[0], block_n):
        s = (q @ k[start:start + block_n].T) * scale                           # (Nq, n) fp32
        c_new = (reference_stable_shift(s, c, beta, tau) if stable else np.maximum(c, s.max(axis=-1)))
        c_new = c_new.astype(np.float32)
        alpha = np.exp(c - c_new)                                              # 0 on the first tile
        p = bf16_round(np.exp(s - c_new[:, None]))                              # the cast before P̃V
        tile = bf16_round(p.astype(np.float64) @ v[start:start + block_n])      # bf16 matmul result
        accumulator = alpha[:, None] * accumulator + tile
        if acc == "bf16":
            accumulator = bf16_round(accumulator)
        ell = alpha * ell + p.sum(axis=-1, dtype=np.float32)
        c = c_new
    return accumulator / ell[:, None], (c + np.log(ell)).astype(np.float32)


def signed_error(o: np.ndarray, o_ref: np.ndarray) -> np.ndarray:
    """The per-feature mean error of o against a float64 reference: (…, N, dv) → (dv,).

    Unbiased rounding gives means near 0 that shrink as 1/√(#rows); a biased one does not shrink.
    """
    diff = np.asarray(o, dtype=np.float64) - np.asarray(o_ref, dtype=np.float64)
    return diff.reshape(-1, diff.shape[-1]).mean(axis=0)


# ----------------------------------------------------------------------------- PyTorch emulation


def _bf16(x: torch.Tensor) -> torch.Tensor:
    """Round to bf16 and come back to x's dtype: where the kernel stores a bf16 value."""
    return x.to(torch.bfloat16).to(x.dtype)


def stable_shift(s: torch.Tensor, c_prev: torch.Tensor, beta: float = STABLE_BETA,
                 tau: float = STABLE_TAU) -> torch.Tensor:
    """Batched :func:`reference_stable_shift`: s (..., m, n), c_prev (..., m) → (..., m); the tile's
    shift is the blocked path's :func:`~lib.attention.flash.stable_tile_shift`."""
    return torch.maximum(stable_tile_shift(s, beta, tau), c_prev)


def flash_attention_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, stable: bool = False,
                         block_n: int = 64, acc: str = "fp32", beta: float = STABLE_BETA,
                         tau: float = STABLE_TAU) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`flash_fwd_lowprec_np` batched over leading dims, with torch's own bf16 casts.

    q: (..., Nq, d), k: (..., Nk, d), v: (..., Nk, dv), bfloat16  →  o (..., Nq, dv), lse (..., Nq),
    float32 (o before the final bf16 store, as in :func:`flash_fwd_lowprec_np`). The arithmetic runs in float32 and every bf16 storage point is an explicit
    cast, because a CPU bf16 matmul would not round where a GPU kernel does.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x)
        if x.dtype != torch.bfloat16:
            raise TypeError(f"{name}: expected a bfloat16 tensor, got {x.dtype}")
    if k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1] or q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"q, k, v: expected (..., Nq, d), (..., Nk, d), (..., Nk, dv), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    check_positive_int("block_n", block_n)
    check_choice("acc", acc, _ACCUMULATORS)
    q, k, v = q.float(), k.float(), v.float()
    c = torch.full(q.shape[:-1], float("-inf"))
    ell = torch.zeros(q.shape[:-1])
    accumulator = torch.zeros(q.shape[:-1] + v.shape[-1:])
    for start in range(0, k.shape[-2], block_n):
        s = (q @ k[..., start:start + block_n, :].transpose(-1, -2)) * q.shape[-1] ** -0.5
        c_new = stable_shift(s, c, beta, tau) if stable else torch.maximum(c, s.amax(dim=-1))
        alpha = torch.exp(c - c_new)
        p = _bf16(torch.exp(s - c_new.unsqueeze(-1)))
        accumulator = alpha.unsqueeze(-1) * accumulator + _bf16(p @ v[..., start:start + block_n, :])
        if acc == "bf16":
            accumulator = _bf16(accumulator)
        ell = alpha * ell + p.sum(dim=-1)
        c = c_new
    return accumulator / ell.unsqueeze(-1), c + torch.log(ell)


# ----------------------------------------------------------------------------- the experiment's inputs


def sample_tied_inputs(batch: int, n: int, d: int, ties: int, seed: int = 0,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention inputs whose every row has its maximum tied ``ties`` times, in bf16.  → q, k, v (batch, n, d).

    The first ``ties`` keys of each sequence are one repeated key k₀ (a recurring token) and every
    query points at it (q = 2·k₀ + 0.3·noise), so each row's largest scores are the ``ties`` equal
    ones; V's features have mean −1 (one shared sign), the situation in which the paper finds the
    rounding biased.
    """
    for name, value in (("batch", batch), ("n", n), ("d", d)):
        check_positive_int(name, value)
    check_int_in_range("ties", ties, 1, n)
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(batch, n, d, generator=g)
    k[:, :ties] = k[:, :1]
    q = 2.0 * k[:, :1] + 0.3 * torch.randn(batch, n, d, generator=g)
    v = 0.5 * torch.randn(batch, n, d, generator=g) - 1.0
    return q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)

