"""Chapter 01 — attention kernels: exact tiled attention (01.1) and the five sections built on it.

* :mod:`lib.attention.reference` — NumPy float64 references: the materialized attention and
  FlashAttention-2 written as loops over tiles; :func:`visible`, the one masking rule.
* :mod:`lib.attention.flash` — :func:`flash_attention`, differentiable, Triton on CUDA and blocked
  PyTorch elsewhere, with bias, sliding-window (causal or two-sided) with sinks, and stable-max hooks.
* :mod:`lib.attention.decoder_backend` — registers it as the workbench decoder's ``attention="flash"``.
* :mod:`lib.attention.lowprec` — bf16 rounding emulated where a kernel rounds, and the stable max (01.2).
* :mod:`lib.attention.delta` — sliding-window prefill with Delta Attention's dense correction (01.3).
* :mod:`lib.attention.kv` — key-value attention, the query projection dropped (01.4).
* :mod:`lib.attention.doubly_stochastic` — Sinkhorn, QR and unistochastic normalizers (01.5).

The attention-free mixer of 01.6 lives in :mod:`lib.mixers.causal_activation`.
"""

from lib.attention import decoder_backend  # noqa: F401  registers attention="flash"
from lib.attention.delta import delta_attention
from lib.attention.flash import flash_attention, flash_attention_with_lse, tiles_visited
from lib.attention.kv import KVSelfAttention
from lib.attention.reference import attention_ref, attention_ref_grad, flash_bwd_np, flash_fwd_np, visible

__all__ = [
    "KVSelfAttention",
    "attention_ref",
    "attention_ref_grad",
    "delta_attention",
    "flash_attention",
    "flash_attention_with_lse",
    "flash_bwd_np",
    "flash_fwd_np",
    "tiles_visited",
    "visible",
]
