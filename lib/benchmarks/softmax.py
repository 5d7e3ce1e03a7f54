"""Benchmarks of sections 00.1 (softmax) and 00.2 (online softmax).

On the CPU: the NumPy reference against ``torch.softmax`` and the ``lib`` functions (their PyTorch
path). On CUDA: the Triton kernels against ``torch.softmax`` and the plain-PyTorch expression
(five separate kernels), in float16 and float32. The Triton interpreter is never timed.

``bytes_moved`` is the least traffic any softmax needs — read x once, write y once — so the GB/s
column is the effective bandwidth, comparable with the GPU's peak (H200: ≈ 4.8 TB/s).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch

from lib.bench import BenchTable, compare, register
from lib.online_softmax import online_softmax, online_softmax_torch, reference_online_softmax
from lib.softmax import reference_softmax, softmax, softmax_torch

__all__ = ["online_softmax_benchmark", "online_softmax_table", "softmax_benchmark", "softmax_table"]

CPU_SHAPES = [(1024, 1024), (256, 8192)]
# The last row length exceeds kernels.softmax.MAX_FUSED_COLS: lib.softmax streams it (00.2's kernel).
CUDA_SHAPES = [(4096, 1024), (4096, 4096), (1024, 16384), (256, 65536)]
# Few rows, long rows (decoding-like) and many rows: where splitting a row pays and where it does not.
CUDA_ONLINE_SHAPES = [(8, 262144), (4096, 4096)]
CUDA_DTYPES = [torch.float16, torch.float32]


def _logits(shape: tuple[int, int], dtype: torch.dtype, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (3.0 * torch.randn(shape, generator=g)).to(device=device, dtype=dtype)


def _table(op: str, x: torch.Tensor, providers: dict[str, Callable[[], Any]], reference: str) -> BenchTable:
    return compare(
        op, providers,
        shape="×".join(map(str, x.shape)), dtype=str(x.dtype).removeprefix("torch."),
        reference=reference, best="torch.softmax", device=x.device.type,
        bytes_moved=2 * x.numel() * x.element_size(),
    )


def softmax_table(x: torch.Tensor) -> BenchTable:
    """Time softmax over the last axis of ``x`` (rows, n): reference, torch.softmax, lib.softmax.

    CPU reference: the NumPy float64 code of 00.1. CUDA reference: the same formula as five
    PyTorch operations (:func:`lib.softmax.softmax_torch`), i.e. what fusion saves.
    """
    if x.is_cuda:
        providers = {"plain torch": partial(softmax_torch, x), "torch.softmax": partial(torch.softmax, x, -1),
                     "lib.softmax": partial(softmax, x)}
        return _table("softmax", x, providers, reference="plain torch")
    x_np = x.numpy()
    providers = {"NumPy reference": partial(reference_softmax, x_np), "torch.softmax": partial(torch.softmax, x, -1),
                 "lib.softmax": partial(softmax, x)}
    return _table("softmax", x, providers, reference="NumPy reference")


def online_softmax_table(x: torch.Tensor, block: int = 1024) -> BenchTable:
    """Time the streaming softmax of 00.2 on ``x`` (rows, n) beside one-shot softmax.

    CPU: the NumPy loop, the blockwise PyTorch version, lib.softmax and torch.softmax.
    CUDA: the looped kernel, the split-row kernel (16 programs per row), lib.softmax (fused when
    the row fits one block) and torch.softmax.
    """
    if x.is_cuda:
        from kernels.online_softmax import online_softmax_split

        providers = {"plain torch": partial(softmax_torch, x), "torch.softmax": partial(torch.softmax, x, -1),
                     "lib.softmax": partial(softmax, x), "online, looped": partial(online_softmax, x, block),
                     "online, split ×16": partial(online_softmax_split, x, splits=16, block=block)}
        return _table("online_softmax", x, providers, reference="plain torch")
    x_np = x.numpy()
    providers = {"NumPy online loop": partial(reference_online_softmax, x_np, block),
                 "torch blockwise": partial(online_softmax_torch, x, block),
                 "lib.softmax": partial(softmax, x), "torch.softmax": partial(torch.softmax, x, -1)}
    return _table("online_softmax", x, providers, reference="NumPy online loop")


def _cases(device: str, cuda_shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    if device == "cuda":
        return [_logits(shape, dtype, device) for shape in cuda_shapes for dtype in CUDA_DTYPES]
    return [_logits(shape, torch.float32, device) for shape in CPU_SHAPES]


@register("softmax")
def softmax_benchmark(device: str) -> list[BenchTable]:
    """``make bench`` / ``make bench-gpu``: :func:`softmax_table` over the standard shapes."""
    return [softmax_table(x) for x in _cases(device, CUDA_SHAPES)]


@register("online_softmax")
def online_softmax_benchmark(device: str) -> list[BenchTable]:
    """``make bench`` / ``make bench-gpu``: :func:`online_softmax_table` over the standard shapes."""
    return [online_softmax_table(x) for x in _cases(device, CUDA_ONLINE_SHAPES)]
