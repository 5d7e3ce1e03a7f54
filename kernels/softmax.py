"""Fused row softmax in Triton: one program per row, the whole row in registers.

Memory traffic is what a softmax costs on a GPU: the arithmetic (one ``exp`` per element) is far
cheaper than moving the element. Per element of an (rows, n) input,

* the plain PyTorch version (``lib.softmax.softmax_torch``) launches five kernels — max, subtract,
  exp, sum, divide — that read 5 and write 3 elements;
* the kernels here read x once and write y once (forward), read y and dy once and write dx once
  (backward): the minimum, ≈4× less traffic than unfused.

The price is that a row must fit in one block (``BLOCK = next power of two ≥ n``), which bounds n
by :data:`MAX_FUSED_COLS`. Longer rows stream through ``kernels.online_softmax`` (section 00.2).

There is no autotuning: one configuration follows from ``BLOCK`` (see :func:`num_warps_for`),
which is also the only thing Triton's CPU interpreter can run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lib.softmax import KERNEL_DTYPES
from lib.validation import check_dtype, check_ndim, check_same_device, check_same_shape, check_tensor

__all__ = [
    "MAX_FUSED_COLS",
    "check_like",
    "check_rows",
    "new_output",
    "num_warps_for",
    "safe_shift",
    "softmax_backward",
    "softmax_backward_kernel",
    "softmax_forward",
    "softmax_forward_kernel",
]

MAX_FUSED_COLS = 2**14
"""Longest row one program holds in registers: 16 384 fp32 values over 16 warps, 32 per thread.

Compiled for sm_90 (H100/H200), the forward kernel uses 78 registers per thread at this size and
spills nothing; at 2**15 it needs 128 registers and spills to the stack.
"""


@triton.jit
def safe_shift(m):
    """The exponent shift: the maximum ``m``, or 0 where ``m = -inf`` so that exp(-inf - 0) = 0."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def softmax_forward_kernel(
    x_ptr, y_ptr, n_cols,
    x_row_stride, x_col_stride, y_row_stride, y_col_stride,
    BLOCK: tl.constexpr,
):
    """y[row] = exp(x[row] - m) / sum(exp(x[row] - m)) for the row this program owns.

    Lanes past ``n_cols`` load -inf, which adds 0 to the sum and is never stored. An all -inf row
    has sum 0 and every numerator 0; dividing by 1 instead of 0 gives the zeros the book promises.
    """
    row = tl.program_id(0).to(tl.int64)              # int64: row * stride may pass 2**31
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols * x_col_stride, mask=mask, other=float("-inf"))
    x = x.to(tl.float32)                             # fp16/bf16 in memory, fp32 in registers
    e = tl.exp(x - safe_shift(tl.max(x, axis=0)))    # (BLOCK,), every exponent ≤ 0
    s = tl.sum(e, axis=0)
    y = e / tl.where(s == 0.0, 1.0, s)
    tl.store(y_ptr + row * y_row_stride + cols * y_col_stride, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_backward_kernel(
    y_ptr, dy_ptr, dx_ptr, n_cols,
    y_row_stride, y_col_stride, dy_row_stride, dy_col_stride, dx_row_stride, dx_col_stride,
    BLOCK: tl.constexpr,
):
    """dx[row] = y[row] * (dy[row] - sum(y[row] * dy[row])) for the row this program owns."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    y = tl.load(y_ptr + row * y_row_stride + cols * y_col_stride, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + row * dy_row_stride + cols * dy_col_stride, mask=mask, other=0.0).to(tl.float32)
    dx = y * (dy - tl.sum(y * dy, axis=0))
    tl.store(dx_ptr + row * dx_row_stride + cols * dx_col_stride, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def check_rows(name: str, t: torch.Tensor) -> None:
    """Raise a one-line error unless ``t`` is a (rows, n) tensor, n ≥ 1, in a dtype the kernels store."""
    check_tensor(name, t)
    check_ndim(name, t, "rows, n")
    check_dtype(name, t, KERNEL_DTYPES)
    if t.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one column, got shape {tuple(t.shape)}")


def check_like(name: str, t: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    """Raise a one-line error unless ``t`` has the shape and the device of ``like``."""
    check_same_shape(name, t, like_name, like)
    check_same_device(name, t, like_name, like)


def new_output(like: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``out`` after checking it matches the input ``like`` (shape, device, kernel dtype), or a new empty tensor.

    Tests pass a NaN-filled ``out`` so that an element the kernel never writes cannot go unnoticed.
    """
    if out is None:
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    check_rows("out", out)
    check_like("out", out, "the input", like)
    return out


def num_warps_for(block: int) -> int:
    """Warps per program: enough that each thread holds ≤ 32 values of a BLOCK-wide row (4 to 16)."""
    return min(16, max(4, block // 1024))


def softmax_forward(x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Launch :func:`softmax_forward_kernel`: softmax over the last axis of a (rows, n) tensor.

    x: (rows, n), n ≤ MAX_FUSED_COLS, fp16/bf16/fp32, any strides (views need no copy)
    →  y: (rows, n) in x's dtype (or written into ``out``). One program per row.
    """
    check_rows("x", x)
    if x.shape[1] > MAX_FUSED_COLS:
        raise ValueError(
            f"x: expected at most {MAX_FUSED_COLS} columns for the one-block kernel, got {x.shape[1]}; "
            "use kernels.online_softmax for longer rows"
        )
    y = new_output(x, out)
    block = triton.next_power_of_2(x.shape[1])
    softmax_forward_kernel[(x.shape[0],)](
        x, y, x.shape[1], *x.stride(), *y.stride(), BLOCK=block, num_warps=num_warps_for(block)
    )
    return y


def softmax_backward(y: torch.Tensor, dy: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Launch :func:`softmax_backward_kernel`: dx = y ∘ (dy − ⟨y, dy⟩) row by row.

    y, dy: (rows, n), n ≤ MAX_FUSED_COLS, fp16/bf16/fp32, any strides  →  dx: (rows, n) in y's dtype.
    """
    check_rows("y", y)
    check_rows("dy", dy)
    check_like("dy", dy, "y", y)
    if y.shape[1] > MAX_FUSED_COLS:
        raise ValueError(f"y: expected at most {MAX_FUSED_COLS} columns for the one-block kernel, got {y.shape[1]}")
    dx = new_output(y, out)
    block = triton.next_power_of_2(y.shape[1])
    softmax_backward_kernel[(y.shape[0],)](
        y, dy, dx, y.shape[1], *y.stride(), *dy.stride(), *dx.stride(), BLOCK=block, num_warps=num_warps_for(block)
    )
    return dx
