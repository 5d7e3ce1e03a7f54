"""The chapter's FlashAttention as an attention backend of the workbench decoder: ``attention="flash"``.

Importing :mod:`lib.attention` registers it, so ``DecoderConfig(attention="flash")`` runs every
layer through :func:`lib.attention.flash_attention` — the blocked PyTorch path on the CPU, the
Triton kernel on CUDA — with exactly the decoder's conventions: the Tq queries are the last Tq of
Tk positions (a decode step sees its whole cache) and ``bias`` (ALiBi) is added to the scaled scores.
"""

from __future__ import annotations

import torch

from lib.attention.flash import flash_attention
from lib.models.decoder import register_attention_backend

__all__ = ["BACKEND_NAME", "flash_backend"]

BACKEND_NAME = "flash"


def flash_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """q (B, H, Tq, Dh), k and v (B, H, Tk, Dh)  →  softmax(q kᵀ/√Dh + bias + causal mask) v, (B, H, Tq, Dh)."""
    return flash_attention(q, k, v, causal=causal, bias=bias)


register_attention_backend(BACKEND_NAME, flash_backend)
