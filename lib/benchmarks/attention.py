"""Benchmark of section 01.1: exact attention, naive vs tiled vs PyTorch's fused SDPA.

On the CPU (``make bench``; float32, one sequence of 4 heads, d = 64):

* ``NumPy reference`` — :func:`lib.attention.reference.attention_ref` (and ``attention_ref_grad``
  for the backward), float64 with the N×N matrix written out: the reference of the ratios;
* ``naive torch`` — softmax(s·QKᵀ)V as three PyTorch operations, the N×N matrix in memory;
* ``lib flash (256² tiles)`` — :func:`lib.attention.flash_attention` on its PyTorch path, with the
  tile size that suits a CPU (:data:`CPU_TILE`);
* ``torch SDPA`` — ``scaled_dot_product_attention``, the best existing implementation.

On CUDA (``make bench-gpu``; bf16 and fp16): the book's Triton kernel (through ``flash_attention``)
against SDPA restricted to its FlashAttention backend and against naive PyTorch, forward and
backward, causal and not, N = 1k … 16k, d ∈ {64, 128}. The batch keeps 16k tokens and the heads
a model width of 2048 (B = 16384/N, H = 2048/d), FlashAttention-2's own benchmark set-up. FLOPs
are the matmuls' 4·B·H·N²·d for the forward (half when causal) and 2.5 times that for the backward
(five N×N×d matmuls instead of two); % of peak is against the H200's 989 TFLOP/s dense bf16/fp16.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lib.attention import attention_ref, attention_ref_grad, flash_attention
from lib.bench import BenchTable, compare, register
from lib.softmax import compute_dtype

__all__ = ["CPU_LENGTHS", "CUDA_LENGTHS", "H200_PEAK_TFLOPS", "attention_benchmark", "attention_flops",
           "attention_table", "naive_attention"]

CPU_LENGTHS = (1024, 2048)
CPU_TILE = 256
"""Tile side of the blocked PyTorch path on the CPU: each tile costs fixed Python overhead, so big tiles win."""
CUDA_LENGTHS = (1024, 2048, 4096, 8192, 16384)
CUDA_HEAD_DIMS = (64, 128)
H200_PEAK_TFLOPS = 989.0
"""Dense bf16/fp16 tensor-core peak of one H200 (SXM), TFLOP/s."""
TOKENS, WIDTH = 16384, 2048


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(s·QKᵀ + mask) V with the (…, N, N) scores materialized: what fusion saves."""
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(s.to(compute_dtype(s.dtype)), dim=-1).to(q.dtype) @ v


def attention_flops(b: int, h: int, n: int, d: int, causal: bool, backward: bool) -> int:
    """Matmul FLOPs of one call: 4·B·H·N²·d forward (QKᵀ and PV), ×2.5 backward, ×½ causal."""
    flops = 4 * b * h * n * n * d
    flops = flops * 5 // 2 if backward else flops
    return flops // 2 if causal else flops


def _inputs(b: int, h: int, n: int, d: int, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, n, d, generator=g).to(device=device, dtype=dtype) for _ in range(4)]


def _backward_of(fn: Callable[..., torch.Tensor], q, k, v, do) -> Callable[[], Any]:
    """A callable that runs only the backward pass of ``fn(q, k, v)`` (the graph is kept for reuse)."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v)
    return partial(torch.autograd.grad, out, (q, k, v), do, retain_graph=True)


def _sdpa_flash(q, k, v, causal: bool) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _providers(q, k, v, do, causal: bool, backward: bool) -> tuple[dict[str, Callable[[], Any]], str, str]:
    """(providers, reference name, best name) for one shape on q's device."""
    fns: dict[str, Callable[..., torch.Tensor]] = {"naive torch": partial(naive_attention, causal=causal)}
    if q.is_cuda:
        fns["book Triton kernel"] = partial(flash_attention, causal=causal)
        fns["torch SDPA (flash)"] = partial(_sdpa_flash, causal=causal)
        best, reference = "torch SDPA (flash)", "naive torch"
    else:
        fns["lib flash (256² tiles)"] = partial(flash_attention, causal=causal, block_m=CPU_TILE, block_n=CPU_TILE)
        fns["torch SDPA"] = partial(F.scaled_dot_product_attention, is_causal=causal)
        best, reference = "torch SDPA", "NumPy reference"
    if backward:
        providers = {name: _backward_of(fn, q, k, v, do) for name, fn in fns.items()}
    else:
        providers = {name: partial(fn, q, k, v) for name, fn in fns.items()}
    if not q.is_cuda:
        arrays = [x.double().numpy() for x in (q, k, v, do)]
        numpy_ref = (partial(attention_ref_grad, *arrays, causal=causal) if backward
                     else partial(attention_ref, *arrays[:3], causal=causal))
        providers = {"NumPy reference": numpy_ref, **providers}
    return providers, reference, best


def attention_table(b: int, h: int, n: int, d: int, *, causal: bool, backward: bool,
                    dtype: torch.dtype = torch.float32, device: str = "cpu") -> BenchTable:
    """Time the forward (or only the backward) of exact attention on (B, H, N, d) inputs, every provider."""
    q, k, v, do = _inputs(b, h, n, d, dtype, device)
    providers, reference, best = _providers(q, k, v, do, causal, backward)
    with torch.no_grad() if not backward else torch.enable_grad():
        return compare(
            "attention " + ("backward" if backward else "forward") + (", causal" if causal else ""),
            providers, shape=f"B{b}·H{h}·N{n}·d{d}", dtype=str(dtype).removeprefix("torch."),
            reference=reference, best=best, device=device,
            flops=attention_flops(b, h, n, d, causal, backward),
            peak_tflops=H200_PEAK_TFLOPS if device == "cuda" and dtype != torch.float32 else None,
        )


@register("attention")
def attention_benchmark(device: str) -> list[BenchTable]:
    """CPU: N = 1024, 2048 (fp32, forward and backward, causal and not). CUDA: the grid of the docstring."""
    if device == "cpu":
        return [attention_table(1, 4, n, 64, causal=causal, backward=backward)
                for n in CPU_LENGTHS for causal in (False, True) for backward in (False, True)]
    tables = []
    for dtype in (torch.bfloat16, torch.float16):
        lengths = CUDA_LENGTHS if dtype == torch.bfloat16 else (4096,)
        for d in CUDA_HEAD_DIMS:
            for n in lengths:
                for causal in (False, True):
                    for backward in (False, True):
                        tables.append(attention_table(TOKENS // n, WIDTH // d, n, d, causal=causal,
                                                      backward=backward, dtype=dtype, device=device))
                        torch.cuda.empty_cache()
    return tables
