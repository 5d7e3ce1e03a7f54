"""Chapter 01 — attention kernels: exact tiled attention (01.1) and its variants.

* :mod:`lib.attention.reference` — NumPy float64 references: the materialized attention and
  FlashAttention-2 written as loops over tiles.
* :mod:`lib.attention.flash` — :func:`flash_attention`, differentiable, Triton on CUDA and blocked
  PyTorch elsewhere, with bias, sliding-window/sink and stable-max hooks.
"""

from lib.attention.flash import flash_attention, flash_attention_with_lse, tiles_visited
from lib.attention.reference import attention_ref, attention_ref_grad, flash_bwd_np, flash_fwd_np

__all__ = [
    "attention_ref",
    "attention_ref_grad",
    "flash_attention",
    "flash_attention_with_lse",
    "flash_bwd_np",
    "flash_fwd_np",
    "tiles_visited",
]
