"""Online softmax in Triton: rows longer than one block, streamed in BLOCK-wide chunks.

A row that does not fit in registers must be read from memory more than once. The safe
three-pass softmax reads it three times (max, sum of exponentials, normalise) and writes it once:
4 accesses per element. The online recurrence (Milakov & Gimelshein, arXiv 1805.02867) finds the
maximum and the sum in the same pass, so it needs 2 reads and 1 write: 3 accesses.

Each row's state is a pair (m, l): the largest value seen and ``l = Σ exp(x_j - m)`` over the
values seen. :func:`merge_states` combines two states; folding a chunk is merging its own state.

* :func:`online_softmax_kernel` — one program per row: pass 1 streams the row into (m, l) held in
  registers, pass 2 streams it again and writes ``exp(x - m) / l``.
* :func:`slice_states_kernel` + :func:`merge_normalize_kernel` — the split-row variant: ``splits``
  programs per row each reduce one slice to a state; then each merges all the row's states (the
  merge is associative, so any order is exact up to rounding) and writes its slice. Same traffic,
  ``splits``× the parallelism — what flash-decoding does when there are few rows but long ones.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.softmax import check_rows, new_output, num_warps_for, safe_shift
from lib.validation import check_positive_int

__all__ = [
    "merge_normalize_kernel",
    "merge_states",
    "online_softmax_forward",
    "online_softmax_kernel",
    "online_softmax_split",
    "slice_states_kernel",
    "stream_state",
    "write_softmax",
]


@triton.jit
def merge_states(m_a, l_a, m_b, l_b):
    """(m, l) of the union of two parts: m = max(m_a, m_b), l = l_a e^(m_a - m) + l_b e^(m_b - m).

    With the shift 0 for m = -inf, a part that saw only -inf (l = 0) contributes exactly 0.
    """
    m = tl.maximum(m_a, m_b)
    shift = safe_shift(m)
    return m, l_a * tl.exp(m_a - shift) + l_b * tl.exp(m_b - shift)


@triton.jit
def stream_state(x_row, col_stride, start, stop, BLOCK: tl.constexpr):
    """Pass 1 over columns [start, stop) of one row: fold BLOCK columns at a time into (m, l)."""
    cols = tl.arange(0, BLOCK)
    m = tl.full((), float("-inf"), tl.float32)
    l = tl.zeros((), tl.float32)
    for chunk in range(start, stop, BLOCK):
        c = chunk + cols
        x = tl.load(x_row + c * col_stride, mask=c < stop, other=float("-inf")).to(tl.float32)
        m_chunk = tl.max(x, axis=0)
        l_chunk = tl.sum(tl.exp(x - safe_shift(m_chunk)), axis=0)
        m, l = merge_states(m, l, m_chunk, l_chunk)
    return m, l


@triton.jit
def write_softmax(x_row, x_col_stride, y_row, y_col_stride, start, stop, m, l, BLOCK: tl.constexpr):
    """Pass 2 over columns [start, stop): y = exp(x - m) / l with the row's final state (l = 0 → 0)."""
    cols = tl.arange(0, BLOCK)
    shift = safe_shift(m)
    divisor = tl.where(l == 0.0, 1.0, l)
    for chunk in range(start, stop, BLOCK):
        c = chunk + cols
        mask = c < stop
        x = tl.load(x_row + c * x_col_stride, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - shift) / divisor
        tl.store(y_row + c * y_col_stride, y.to(y_row.dtype.element_ty), mask=mask)


@triton.jit
def online_softmax_kernel(
    x_ptr, y_ptr, n_cols,
    x_row_stride, x_col_stride, y_row_stride, y_col_stride,
    BLOCK: tl.constexpr,
):
    """Softmax of the row this program owns, in two streaming passes (2 reads + 1 write per element)."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    m, l = stream_state(x_row, x_col_stride, 0, n_cols, BLOCK)
    write_softmax(x_row, x_col_stride, y_ptr + row * y_row_stride, y_col_stride, 0, n_cols, m, l, BLOCK)


@triton.jit
def slice_states_kernel(
    x_ptr, m_ptr, l_ptr, n_cols, slice_cols,
    x_row_stride, x_col_stride, n_splits,
    BLOCK: tl.constexpr,
):
    """Program (row, s) reduces columns [s·slice_cols, (s+1)·slice_cols) of its row to (m, l)."""
    row = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    start = s * slice_cols
    stop = tl.minimum(start + slice_cols, n_cols)
    m, l = stream_state(x_ptr + row * x_row_stride, x_col_stride, start, stop, BLOCK)
    tl.store(m_ptr + row * n_splits + s, m)
    tl.store(l_ptr + row * n_splits + s, l)


@triton.jit
def merge_normalize_kernel(
    x_ptr, y_ptr, m_ptr, l_ptr, n_cols, slice_cols,
    x_row_stride, x_col_stride, y_row_stride, y_col_stride, n_splits,
    SPLITS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program (row, s) merges the row's ``n_splits`` states, then writes slice s of the output.

    All states merge at once: m = max_i m_i and l = Σ_i l_i e^(m_i - m), the associative merge
    evaluated as one tree reduction. Padding lanes carry the empty state (-inf, 0).
    """
    row = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    i = tl.arange(0, SPLITS)
    m_i = tl.load(m_ptr + row * n_splits + i, mask=i < n_splits, other=float("-inf"))
    l_i = tl.load(l_ptr + row * n_splits + i, mask=i < n_splits, other=0.0)
    m = tl.max(m_i, axis=0)
    l = tl.sum(l_i * tl.exp(m_i - safe_shift(m)), axis=0)
    start = s * slice_cols
    stop = tl.minimum(start + slice_cols, n_cols)
    write_softmax(
        x_ptr + row * x_row_stride, x_col_stride, y_ptr + row * y_row_stride, y_col_stride,
        start, stop, m, l, BLOCK,
    )


def online_softmax_forward(x: torch.Tensor, *, block: int = 1024, out: torch.Tensor | None = None) -> torch.Tensor:
    """Launch :func:`online_softmax_kernel`: softmax over the last axis, one program per row.

    x: (rows, n), fp16/bf16/fp32, any strides, any n  →  y: (rows, n) in x's dtype (or ``out``).
    ``block`` columns are folded per step, rounded up to a power of two (Triton's tile sizes are).
    """
    check_rows("x", x)
    check_positive_int("block", block)
    y = new_output(x, out)
    block = triton.next_power_of_2(block)
    online_softmax_kernel[(x.shape[0],)](
        x, y, x.shape[1], *x.stride(), *y.stride(), BLOCK=block, num_warps=num_warps_for(block)
    )
    return y


def online_softmax_split(
    x: torch.Tensor, *, splits: int = 4, block: int = 1024, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Split-row online softmax: ``splits`` programs per row, two launches (states, then merge + write).

    x: (rows, n), fp16/bf16/fp32, any strides  →  y: (rows, n) in x's dtype (or ``out``).
    Each slice holds a whole number of blocks; trailing slices of a short row are empty, and their
    state (-inf, 0) merges away. Intermediate states: two (rows, splits) float32 tensors.
    """
    check_rows("x", x)
    check_positive_int("splits", splits)
    check_positive_int("block", block)
    y = new_output(x, out)
    rows, n = x.shape
    block = triton.next_power_of_2(block)
    slice_cols = triton.cdiv(triton.cdiv(n, splits), block) * block
    m = torch.empty((rows, splits), dtype=torch.float32, device=x.device)
    l = torch.empty_like(m)
    warps = num_warps_for(block)
    slice_states_kernel[(rows, splits)](
        x, m, l, n, slice_cols, *x.stride(), splits, BLOCK=block, num_warps=warps
    )
    merge_normalize_kernel[(rows, splits)](
        x, y, m, l, n, slice_cols, *x.stride(), *y.stride(), splits,
        SPLITS=triton.next_power_of_2(splits), BLOCK=block, num_warps=warps,
    )
    return y
