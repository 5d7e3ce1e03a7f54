"""Section 10.1 / 10.3 — number formats for quantization: INT-b, FP ExMy, MXFP4, NVFP4, nibbles.

Every format here maps a real x to a code on a small grid and back. Each has a NumPy reference
written plainly (loops over blocks, distances to every grid point) and a vectorised PyTorch
version (reshape into blocks, ``torch.bucketize`` on midpoints); the tests demand that both give
the *same codes*, ties included. Both do their arithmetic in the dtype of ``x`` (float32 or
float64) with the same operations in the same order, so the rounding decisions agree bit for bit.

Integer, symmetric b-bit (BCT, arXiv 2304.01483), one scale s per group of values:

    Q = 2^{b-1} - 1,   s = max|x| / Q,   q = clamp(round_half_even(x / s), -Q, Q),   x̂ = s·q

A group is the whole tensor, one line along an axis, or a block of G consecutive values along an
axis. An all-zero group has s = 0 and codes 0 (we divide by 1 instead of 0, so no NaN appears).
Inside the range the error is at most half a step: |x - x̂| ≤ s/2.

Floating point ExMy (LLM-FP4, arXiv 2310.16836), with e exponent and m mantissa bits, bias β:

    normal (E ≥ 1):     2^{E-β} · (1 + M/2^m)
    subnormal (E = 0):  2^{1-β} · M/2^m

All 2^{e+m} magnitude codes are finite numbers here (no inf/NaN codes, as in the OCP FP4/FP6
element types). The magnitude code c = E·2^m + M grows with the value, so the sorted grid index
*is* the code, and "ties to even mantissa" is "ties to the even index". ``quantize_fp`` puts
maxval on the largest grid value: x̂ = α·R(x/α), α = maxval / max(grid), R nearest with ties to
even, saturating at ±max(grid).

Block-scaled FP4, both with E2M1 elements {0, .5, 1, 1.5, 2, 3, 4, 6}:

* MXFP4 (OCP Microscaling Formats (MX) Specification v1.0, 2023): blocks of 32, one shared
  E8M0 scale X = 2^{floor(log2 amax) - emax_elem} with emax_elem = 2 for E2M1 (the exponent of 6
  = 1.5·2^2), elements R(x/X) rounded to nearest even and clamped to ±6 (amax/X lies in [4, 8), so
  the largest element can exceed 6 and saturates). E8M0 stores the exponent with bias 127 in one
  byte; 0xFF is NaN, so the exponent is clamped to [-127, 127]. Checked against secondary sources
  (the spec PDF itself was not in the search index): Modular's ``fp4_utils`` API docs (E2M1 max
  exponent 2, E8M0 scale, 32-element MXFP4 blocks, the E2M1 value table) and the Khronos
  SPV_EXT_ocp_microscaling_types extension (which names OCP MX v1.0 for FP4 E2M1 and E8M0).
  The syllabus formula agrees.
* NVFP4 (NVIDIA Blackwell): blocks of 16, each with an FP8 E4M3 scale, times one fp32 scale per
  tensor, as described at stillwater-sc.github.io/universal/number-systems/nvblock (block scale
  "round_to_e4m3(amax / elem_max)", external fp32 tensor scale) and ai-infrastructure.net/
  nvfp4-quantization (the per-tensor scale "normalizes block scales into FP8 range"). We take
  s_t = amax_tensor / (6·448), which maps the largest block scale onto E4M3's maximum 448 (our
  reading of NVIDIA's recipe; the pages above do not fix the constant), the block scale
  s_b = E4M3(amax_b / (6·s_t)) and elements R(x / (s_b·s_t)) saturating at ±6, so
  x̂ = s_t·s_b·q. The syllabus ("amax/6 rounded to E4M3 times an fp32 tensor scale") agrees.
  E4M3 ("fn" variant: bias 7, no inf, S.1111.111 is NaN, max 448) is emulated by rounding onto
  its grid; the tests check it value for value against a cast through ``torch.float8_e4m3fn``.

E2M1 codes are 4 bits: bit 3 the sign, bits 0–2 the magnitude index. A value that rounds to zero
gets code 0 whatever its sign (the −0 code 8 is never produced, but decodes to 0). Two codes
pack into a byte, low nibble first; an odd count is padded with a zero code (``unpack_nibbles``
takes the true count n and drops the pad).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lib.validation import check_int_in_range, check_positive_int, check_tensor

__all__ = [
    "E2M1_GRID",
    "E4M3_MAX",
    "MX_BLOCK",
    "NV_BLOCK",
    "decode_e2m1",
    "decode_e2m1_np",
    "dequantize_blocks",
    "dequantize_blocks_np",
    "e4m3_round",
    "e4m3_round_np",
    "fp_codes",
    "fp_codes_np",
    "fp_grid",
    "int_qmax",
    "mx_dequantize",
    "mx_dequantize_np",
    "mx_quantize",
    "mx_quantize_np",
    "nearest_grid_index",
    "nearest_grid_index_np",
    "nv_dequantize",
    "nv_dequantize_np",
    "nv_quantize",
    "nv_quantize_np",
    "pack_nibbles",
    "pack_nibbles_np",
    "quantize_blocks",
    "quantize_blocks_np",
    "quantize_fp",
    "quantize_fp_np",
    "quantize_per_axis",
    "quantize_per_axis_np",
    "quantize_per_tensor",
    "quantize_per_tensor_np",
    "unpack_nibbles",
    "unpack_nibbles_np",
]

MX_BLOCK = 32
NV_BLOCK = 16
E4M3_MAX = 448.0
_E2M1_EMAX = 2          # exponent of the largest E2M1 value, 6 = 1.5 · 2^2
_E8M0_MIN, _E8M0_MAX = -127, 127


# ----------------------------------------------------------------------------- shared checks


def _check_array(name: str, x: Any) -> np.ndarray:
    """A floating NumPy array with at least one dimension and only finite values."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating-point array, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name}: expected at least one dimension, got a 0-d array")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return x


def _check_floating(name: str, x: Any) -> None:
    """A floating torch tensor with at least one dimension and only finite values."""
    check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name}: expected at least one dimension, got a 0-d tensor")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")


def _check_axis(axis: Any, ndim: int) -> int:
    """Return ``axis`` as a non-negative index; raise ``ValueError`` naming ``axis`` otherwise."""
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ValueError(f"axis: expected an int in [{-ndim}, {ndim}) for a {ndim}-d input, got {axis!r}")
    return axis % ndim


def _check_block(block: Any, n: int, axis: int) -> None:
    """``block`` must be a positive int dividing the length n of dimension ``axis``."""
    check_positive_int("block", block)
    if n % block != 0:
        raise ValueError(f"block: expected a divisor of dimension {axis} (length {n}), got {block}")


def _check_maxval(maxval: Any) -> None:
    if isinstance(maxval, bool) or not isinstance(maxval, (int, float)) or not (0 < maxval < math.inf):
        raise ValueError(f"maxval: expected a positive finite number, got {maxval!r}")


# ----------------------------------------------------------------------------- integer formats


def int_qmax(bits: int) -> int:
    """Largest code of symmetric ``bits``-bit quantization, Q = 2^{b-1} - 1 (b in 2..8)."""
    check_int_in_range("bits", bits, 2, 8)
    return 2 ** (bits - 1) - 1


def quantize_blocks_np(x: Any, bits: int, block: int, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference: symmetric ``bits``-bit codes with one scale per block of ``block`` values.

    x: (..., n, ...) with n = x.shape[axis], block | n  →  q: int8, shape of x;
    s: dtype of x, shape of x with n replaced by n / block.
    For block j along ``axis``:  s_j = max|x_j| / Q,  q_j = clamp(rint(x_j / s_j), -Q, Q).
    """
    x = _check_array("x", x)
    qmax = int_qmax(bits)
    axis = _check_axis(axis, x.ndim)
    n = x.shape[axis]
    _check_block(block, n, axis)
    xl = np.moveaxis(x, axis, -1)                               # (..., n)
    q = np.zeros(xl.shape, dtype=np.int8)
    s = np.zeros(xl.shape[:-1] + (n // block,), dtype=x.dtype)
    for j in range(n // block):
        part = xl[..., j * block:(j + 1) * block]              # (..., block)
        scale = np.abs(part).max(axis=-1) / x.dtype.type(qmax)  # (...,)
        safe = np.where(scale == 0, x.dtype.type(1), scale)    # all-zero block: codes 0, no 0/0
        codes = np.clip(np.rint(part / safe[..., None]), -qmax, qmax)
        q[..., j * block:(j + 1) * block] = codes.astype(np.int8)
        s[..., j] = scale
    return np.moveaxis(q, -1, axis), np.moveaxis(s, -1, axis)


def dequantize_blocks_np(q: Any, s: Any, block: int, axis: int = -1) -> np.ndarray:
    """NumPy reference: x̂ = s_j · q for every value of block j; the inverse layout of ``quantize_blocks_np``."""
    q, s = np.asarray(q), np.asarray(s)
    axis = _check_axis(axis, q.ndim)
    check_positive_int("block", block)
    if s.shape[axis] * block != q.shape[axis]:
        raise ValueError(f"s: expected {q.shape[axis] // block} scales along axis {axis}, got shape {s.shape}")
    return np.repeat(s, block, axis=axis) * q.astype(s.dtype)


def quantize_per_axis_np(x: Any, bits: int, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference: one scale per line along ``axis`` (per row of a matrix for axis=-1).

    x: (..., n, ...)  →  q like x, s with dimension ``axis`` of length 1 (keepdims).
    The same as one block spanning the whole axis.
    """
    x = _check_array("x", x)
    axis = _check_axis(axis, x.ndim)
    return quantize_blocks_np(x, bits, x.shape[axis], axis)


def quantize_per_tensor_np(x: Any, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference: one scale for the whole tensor.  x: any shape → q like x, s: 0-d array."""
    x = _check_array("x", x)
    q, s = quantize_blocks_np(x.reshape(-1), bits, x.size)
    return q.reshape(x.shape), s.reshape(())


def quantize_blocks(x: torch.Tensor, bits: int, block: int, axis: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch: symmetric ``bits``-bit block quantization, vectorised over all blocks.

    Same contract and codes as :func:`quantize_blocks_np`: reshape the axis into (n/block, block),
    take the absmax, divide, round half to even, clamp.  q: int8 like x; s: dtype of x.
    """
    _check_floating("x", x)
    qmax = int_qmax(bits)
    axis = _check_axis(axis, x.ndim)
    n = x.shape[axis]
    _check_block(block, n, axis)
    xl = x.movedim(axis, -1)
    xb = xl.reshape(*xl.shape[:-1], n // block, block)           # (..., n/block, block)
    s = xb.abs().amax(dim=-1) / qmax                              # (..., n/block)
    safe = torch.where(s == 0, torch.ones_like(s), s)
    q = torch.round(xb / safe[..., None]).clamp_(-qmax, qmax).to(torch.int8)
    return q.reshape(xl.shape).movedim(-1, axis), s.movedim(-1, axis)


def dequantize_blocks(q: torch.Tensor, s: torch.Tensor, block: int, axis: int = -1) -> torch.Tensor:
    """PyTorch: x̂ = s_j · q per block j along ``axis`` (inverse layout of :func:`quantize_blocks`)."""
    check_tensor("q", q)
    check_tensor("s", s)
    axis = _check_axis(axis, q.ndim)
    check_positive_int("block", block)
    if s.shape[axis] * block != q.shape[axis]:
        expected = q.shape[axis] // block
        raise ValueError(f"s: expected {expected} scales along axis {axis}, got shape {tuple(s.shape)}")
    return torch.repeat_interleave(s, block, dim=axis) * q.to(s.dtype)


def quantize_per_axis(x: torch.Tensor, bits: int, axis: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch: one scale per line along ``axis``; s keeps that dimension with length 1."""
    _check_floating("x", x)
    axis = _check_axis(axis, x.ndim)
    return quantize_blocks(x, bits, x.shape[axis], axis)


def quantize_per_tensor(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch: one scale for the whole tensor.  x: any shape → q like x, s: 0-d tensor."""
    _check_floating("x", x)
    q, s = quantize_blocks(x.reshape(-1), bits, x.numel())
    return q.reshape(x.shape), s.reshape(())


# ----------------------------------------------------------------------------- floating-point grids


def fp_grid(exp_bits: int, man_bits: int, bias: int | None = None) -> np.ndarray:
    """The 2^{e+m} non-negative values of ExMy, ascending, in float64 (index = magnitude code).

    Code c = E·2^m + M is  2^{1-β}·M/2^m  for E = 0 (subnormal, incl. 0) and
    2^{E-β}·(1 + M/2^m)  for E ≥ 1.  Default bias β = 2^{e-1} - 1 (E2M1 → 1, E4M3 → 7).
    Example: fp_grid(2, 1) = [0, .5, 1, 1.5, 2, 3, 4, 6].  e in 1..5, m in 0..7, e + m ≤ 8.
    """
    check_int_in_range("exp_bits", exp_bits, 1, 5)
    check_int_in_range("man_bits", man_bits, 0, 7)
    if exp_bits + man_bits > 8:
        raise ValueError(f"man_bits: expected exp_bits + man_bits ≤ 8, got {exp_bits} + {man_bits}")
    if bias is None:
        bias = 2 ** (exp_bits - 1) - 1
    elif isinstance(bias, bool) or not isinstance(bias, int):
        raise ValueError(f"bias: expected an int or None, got {bias!r}")
    values = []
    for e in range(2 ** exp_bits):
        for m in range(2 ** man_bits):
            if e == 0:
                values.append(2.0 ** (1 - bias) * m / 2 ** man_bits)
            else:
                values.append(2.0 ** (e - bias) * (1 + m / 2 ** man_bits))
    return np.array(values, dtype=np.float64)


E2M1_GRID = fp_grid(2, 1)
_E4M3_GRID = fp_grid(4, 3)[:-1]          # drop S.1111.111 (NaN in E4M3fn): max 448


def nearest_grid_index_np(y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """NumPy reference: index of the grid value nearest to each y ≥ 0; ties go to the even index.

    y: any shape, non-negative;  grid: (k,) ascending  →  int64 indices, shape of y.
    Values above the top are saturated: clipped to the top value first (for a huge y every
    float64 distance would round to the same number and argmin would pick index 0).
    Distances are taken in float64; near a tie the subtractions are exact (Sterbenz).
    """
    y64 = np.minimum(np.asarray(y, dtype=np.float64), grid[-1])
    dist = np.abs(y64[..., None] - grid)                    # (..., k)
    best = dist.argmin(axis=-1)                              # first (lower) of two equal minima
    upper = np.minimum(best + 1, len(grid) - 1)
    d_best = np.take_along_axis(dist, best[..., None], -1)[..., 0]
    d_upper = np.take_along_axis(dist, upper[..., None], -1)[..., 0]
    tie = (upper != best) & (d_upper == d_best)
    return np.where(tie & (best % 2 == 1), upper, best)


def nearest_grid_index(y: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """PyTorch: as :func:`nearest_grid_index_np`, by bucketizing on the k - 1 midpoints.

    ``torch.bucketize`` (right=False) puts a y equal to midpoint i in bucket i, the lower grid
    value; the fix-up moves such exact ties to i + 1 when i is odd. grid: (k,) ascending, any dtype
    (cast to y's dtype; dyadic midpoints of these small grids are exact in float32).
    """
    grid = grid.to(dtype=y.dtype, device=y.device)
    mid = (grid[1:] + grid[:-1]) / 2                                        # (k-1,)
    idx = torch.bucketize(y.contiguous(), mid)                              # int64, shape of y
    at_mid = mid[idx.clamp(max=len(mid) - 1)] == y
    tie_up = at_mid & (idx < len(mid)) & (idx % 2 == 1)
    return idx + tie_up.to(idx.dtype)


def quantize_fp_np(x: Any, exp_bits: int, man_bits: int, maxval: float) -> np.ndarray:
    """NumPy reference: x̂ = sign(x)·α·grid[R(|x|/α)], α = maxval / max(grid), on the ExMy grid.

    x: any shape (floating, finite) → x̂: shape and dtype of x. R: nearest, ties to the even code,
    saturating at maxval.
    """
    x = _check_array("x", x)
    grid = fp_grid(exp_bits, man_bits)
    _check_maxval(maxval)
    alpha = x.dtype.type(maxval / grid[-1])
    idx = nearest_grid_index_np(np.abs(x) / alpha, grid)
    return (np.sign(x) * alpha * grid[idx].astype(x.dtype)).astype(x.dtype)


def quantize_fp(x: torch.Tensor, exp_bits: int, man_bits: int, maxval: float) -> torch.Tensor:
    """PyTorch: the same values as :func:`quantize_fp_np` (bucketize on midpoints + tie fix-up)."""
    _check_floating("x", x)
    grid_np = fp_grid(exp_bits, man_bits)
    _check_maxval(maxval)
    alpha = torch.tensor(maxval / grid_np[-1], dtype=x.dtype, device=x.device)
    grid = torch.tensor(grid_np, dtype=x.dtype, device=x.device)
    idx = nearest_grid_index(x.abs() / alpha, grid)
    return torch.sign(x) * alpha * grid[idx]


def fp_codes_np(x: Any, maxval: float = 6.0) -> np.ndarray:
    """NumPy reference: 4-bit E2M1 codes (bit 3 sign, bits 0–2 magnitude index), uint8, shape of x.

    Magnitude index = R(|x| / α), α = maxval / 6; a value rounding to 0 gets code 0 (never −0).
    """
    x = _check_array("x", x)
    _check_maxval(maxval)
    alpha = x.dtype.type(maxval / E2M1_GRID[-1])
    mag = nearest_grid_index_np(np.abs(x) / alpha, E2M1_GRID)
    sign = (x < 0) & (mag > 0)
    return (sign.astype(np.uint8) << 3) | mag.astype(np.uint8)


def fp_codes(x: torch.Tensor, maxval: float = 6.0) -> torch.Tensor:
    """PyTorch: the same 4-bit E2M1 codes as :func:`fp_codes_np`, uint8."""
    _check_floating("x", x)
    _check_maxval(maxval)
    alpha = torch.tensor(maxval / E2M1_GRID[-1], dtype=x.dtype, device=x.device)
    mag = nearest_grid_index(x.abs() / alpha, torch.tensor(E2M1_GRID))
    sign = (x < 0) & (mag > 0)
    return (sign.to(torch.uint8) << 3) | mag.to(torch.uint8)


def decode_e2m1_np(codes: Any) -> np.ndarray:
    """NumPy: E2M1 code (0..15) → value in float32: (−1)^{bit 3} · grid[bits 0–2]."""
    codes = np.asarray(codes).astype(np.int64)
    mag = E2M1_GRID[codes & 7].astype(np.float32)
    return np.where(codes & 8, -mag, mag)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """PyTorch: E2M1 code (0..15) → float32 value, through a 16-entry lookup table."""
    table = torch.tensor(np.concatenate([E2M1_GRID, -E2M1_GRID]), dtype=torch.float32, device=codes.device)
    return table[codes.long()]


def e4m3_round_np(x: Any) -> np.ndarray:
    """NumPy: round to the nearest FP8 E4M3fn value (ties to even, saturating at ±448); dtype of x."""
    x = np.asarray(x)
    idx = nearest_grid_index_np(np.abs(x), _E4M3_GRID)
    return (np.sign(x) * _E4M3_GRID[idx]).astype(x.dtype)


def e4m3_round(x: torch.Tensor) -> torch.Tensor:
    """PyTorch: as :func:`e4m3_round_np`; equals a saturated cast through ``torch.float8_e4m3fn``."""
    grid = torch.tensor(_E4M3_GRID, dtype=x.dtype, device=x.device)
    return torch.sign(x) * grid[nearest_grid_index(x.abs(), grid)]


# ----------------------------------------------------------------------------- MXFP4 and NVFP4


def _floor_log2_np(a: np.ndarray) -> np.ndarray:
    """floor(log2 a) exactly for a > 0, from the binary exponent (a = f·2^k, f in [0.5, 1))."""
    _, k = np.frexp(a)
    return k.astype(np.int64) - 1


def mx_quantize_np(x: Any, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference for MXFP4 along ``axis`` (blocks of 32).

    x: (..., n, ...), 32 | n  →  codes: uint8 E2M1 codes, shape of x;
    scale_exp: int16 shared exponents k, shape of x with n → n/32; X = 2^k,
    k = clamp(floor(log2 amax) − 2, −127, 127) (k = −127 for an all-zero block), codes of x / X.
    The stored E8M0 byte is k + 127.
    """
    x = _check_array("x", x)
    axis = _check_axis(axis, x.ndim)
    n = x.shape[axis]
    _check_block(MX_BLOCK, n, axis)
    xl = np.moveaxis(x, axis, -1)
    codes = np.zeros(xl.shape, dtype=np.uint8)
    k_all = np.zeros(xl.shape[:-1] + (n // MX_BLOCK,), dtype=np.int16)
    for j in range(n // MX_BLOCK):
        part = xl[..., j * MX_BLOCK:(j + 1) * MX_BLOCK]
        amax = np.abs(part).max(axis=-1)
        k = np.where(amax > 0, _floor_log2_np(np.where(amax > 0, amax, 1)) - _E2M1_EMAX, _E8M0_MIN)
        k = np.clip(k, _E8M0_MIN, _E8M0_MAX)
        scale = np.ldexp(np.ones_like(amax), k.astype(np.int32)).astype(x.dtype)   # exact 2^k
        codes[..., j * MX_BLOCK:(j + 1) * MX_BLOCK] = fp_codes_np(part / scale[..., None])
        k_all[..., j] = k
    return np.moveaxis(codes, -1, axis), np.moveaxis(k_all, -1, axis)


def mx_dequantize_np(codes: Any, scale_exp: Any, axis: int = -1) -> np.ndarray:
    """NumPy: x̂ = 2^k · E2M1(code), float32, shape of codes."""
    codes = np.asarray(codes)
    scale = np.ldexp(np.float32(1), np.asarray(scale_exp).astype(np.int32)).astype(np.float32)
    return dequantize_blocks_np(decode_e2m1_np(codes), scale, MX_BLOCK, axis)


def mx_quantize(x: torch.Tensor, axis: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch MXFP4, vectorised; same codes (uint8) and exponents (int16) as :func:`mx_quantize_np`."""
    _check_floating("x", x)
    axis = _check_axis(axis, x.ndim)
    n = x.shape[axis]
    _check_block(MX_BLOCK, n, axis)
    xl = x.movedim(axis, -1)
    xb = xl.reshape(*xl.shape[:-1], n // MX_BLOCK, MX_BLOCK)
    amax = xb.abs().amax(dim=-1)
    _, e = torch.frexp(torch.where(amax > 0, amax, torch.ones_like(amax)))
    k = torch.where(amax > 0, e.long() - 1 - _E2M1_EMAX, torch.full_like(e, _E8M0_MIN, dtype=torch.long))
    k = k.clamp(_E8M0_MIN, _E8M0_MAX)
    scale = torch.ldexp(torch.ones_like(amax), k.to(amax.dtype))     # exact powers of two
    codes = fp_codes(xb / scale[..., None])
    return codes.reshape(xl.shape).movedim(-1, axis), k.to(torch.int16).movedim(-1, axis)


def mx_dequantize(codes: torch.Tensor, scale_exp: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """PyTorch: x̂ = 2^k · E2M1(code), float32."""
    scale = torch.ldexp(torch.ones(scale_exp.shape, dtype=torch.float32, device=scale_exp.device),
                        scale_exp.to(torch.float32))
    return dequantize_blocks(decode_e2m1(codes), scale, MX_BLOCK, axis)


def nv_quantize_np(x: Any, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy reference for NVFP4 along ``axis`` (blocks of 16, two-level scale).

    x: (..., n, ...), 16 | n  →  codes: uint8 E2M1, shape of x;  block_scale: E4M3 values (stored
    in x's dtype), shape of x with n → n/16;  tensor_scale: 0-d, s_t = amax / (6·448).
    s_b = E4M3(amax_b / (6·s_t)), codes of x / (s_b·s_t); a zero s_b or s_t gives codes 0.
    """
    x = _check_array("x", x)
    axis = _check_axis(axis, x.ndim)
    n = x.shape[axis]
    _check_block(NV_BLOCK, n, axis)
    one = x.dtype.type(1)
    s_t = np.abs(x).max() / x.dtype.type(6 * E4M3_MAX)
    s_t_safe = s_t if s_t > 0 else one
    xl = np.moveaxis(x, axis, -1)
    codes = np.zeros(xl.shape, dtype=np.uint8)
    s_b_all = np.zeros(xl.shape[:-1] + (n // NV_BLOCK,), dtype=x.dtype)
    for j in range(n // NV_BLOCK):
        part = xl[..., j * NV_BLOCK:(j + 1) * NV_BLOCK]
        amax = np.abs(part).max(axis=-1)
        s_b = e4m3_round_np(amax / x.dtype.type(6) / s_t_safe)
        step = s_b * s_t_safe
        safe = np.where(step == 0, one, step)
        codes[..., j * NV_BLOCK:(j + 1) * NV_BLOCK] = fp_codes_np(part / safe[..., None])
        s_b_all[..., j] = s_b
    return np.moveaxis(codes, -1, axis), np.moveaxis(s_b_all, -1, axis), np.asarray(s_t)


def nv_dequantize_np(codes: Any, block_scale: Any, tensor_scale: Any, axis: int = -1) -> np.ndarray:
    """NumPy: x̂ = s_t · s_b · E2M1(code), in the dtype of the block scales."""
    block_scale = np.asarray(block_scale)
    vals = decode_e2m1_np(codes).astype(block_scale.dtype)
    return dequantize_blocks_np(vals, block_scale * np.asarray(tensor_scale, dtype=block_scale.dtype),
                                NV_BLOCK, axis)


def nv_quantize(x: torch.Tensor, axis: int = -1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch NVFP4, vectorised; same codes and scales as :func:`nv_quantize_np`."""
    _check_floating("x", x)
    axis = _check_axis(axis, x.ndim)
    n = x.shape[axis]
    _check_block(NV_BLOCK, n, axis)
    s_t = x.abs().amax() / (6 * E4M3_MAX)
    s_t_safe = torch.where(s_t > 0, s_t, torch.ones_like(s_t))
    xl = x.movedim(axis, -1)
    xb = xl.reshape(*xl.shape[:-1], n // NV_BLOCK, NV_BLOCK)
    s_b = e4m3_round(xb.abs().amax(dim=-1) / 6 / s_t_safe)
    step = s_b * s_t_safe
    safe = torch.where(step == 0, torch.ones_like(step), step)
    codes = fp_codes(xb / safe[..., None])
    return codes.reshape(xl.shape).movedim(-1, axis), s_b.movedim(-1, axis), s_t


def nv_dequantize(codes: torch.Tensor, block_scale: torch.Tensor, tensor_scale: torch.Tensor,
                  axis: int = -1) -> torch.Tensor:
    """PyTorch: x̂ = s_t · s_b · E2M1(code), in the dtype of the block scales."""
    vals = decode_e2m1(codes).to(block_scale.dtype)
    return dequantize_blocks(vals, block_scale * tensor_scale.to(block_scale.dtype), NV_BLOCK, axis)


# ----------------------------------------------------------------------------- nibble packing


def _check_codes_np(codes: Any) -> np.ndarray:
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"codes: expected an integer array, got {codes.dtype}")
    if codes.ndim == 0:
        raise ValueError("codes: expected at least one dimension, got a 0-d array")
    if codes.size and (codes.min() < 0 or codes.max() > 15):
        raise ValueError(f"codes: expected values in [0, 15], got range [{codes.min()}, {codes.max()}]")
    return codes


def _check_count(n: Any, pairs: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n not in (2 * pairs - 1, 2 * pairs) or n < 0:
        raise ValueError(f"n: expected {2 * pairs - 1} or {2 * pairs} codes for {pairs} bytes, got {n!r}")


def pack_nibbles_np(codes: Any) -> np.ndarray:
    """NumPy: two 4-bit codes per byte along the last axis, low nibble first.

    codes: (..., n) integers in [0, 15]  →  (..., ceil(n/2)) uint8, byte i = c[2i] | c[2i+1] << 4.
    An odd n is padded with one zero code (the high nibble of the last byte is 0).
    """
    codes = _check_codes_np(codes).astype(np.uint8)
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), np.uint8)], axis=-1)
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_nibbles_np(packed: Any, n: int) -> np.ndarray:
    """NumPy: inverse of :func:`pack_nibbles_np`; (..., m) uint8 → (..., n) uint8, n in {2m − 1, 2m}."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise TypeError(f"packed: expected uint8, got {packed.dtype}")
    _check_count(n, packed.shape[-1])
    out = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[:-1] + (-1,))
    return out[..., :n]


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """PyTorch: as :func:`pack_nibbles_np` (low nibble first, odd n padded with a zero code)."""
    check_tensor("codes", codes)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.ndim == 0:
        raise TypeError(f"codes: expected an integer tensor with at least one dimension, got {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > 15):
        raise ValueError(f"codes: expected values in [0, 15], got range [{int(codes.min())}, {int(codes.max())}]")
    c = codes.to(torch.uint8)
    if c.shape[-1] % 2:
        c = torch.cat([c, c.new_zeros(*c.shape[:-1], 1)], dim=-1)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """PyTorch: inverse of :func:`pack_nibbles`; (..., m) uint8 → (..., n) uint8."""
    check_tensor("packed", packed)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed: expected uint8, got {packed.dtype}")
    _check_count(n, packed.shape[-1])
    out = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(*packed.shape[:-1], -1)
    return out[..., :n]
