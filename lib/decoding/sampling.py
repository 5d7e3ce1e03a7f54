"""The sampling transform: logits → the probabilities a sampler draws the next token from.

Speculative decoding is exact only when the target and the draft rows it compares went through
the *same* transform (arXiv 2211.17192), so every decoder of chapter 07 calls this one
function. It follows the rules of :func:`lib.models.decoder.sample_next_token`::

    p ∝ exp(logits / T)              restricted to the top_k largest logits, then to the nucleus:
                                     the fewest most likely tokens whose mass reaches top_p

and T = 0 gives the one-hot row of the argmax (greedy decoding).
"""

from __future__ import annotations

import torch

from lib.validation import check_floating_tensor, check_sampling

__all__ = ["check_sampling", "sampling_transform"]


def _keep_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to −inf; (…, V) → (…, V)."""
    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _keep_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the most likely tokens until their mass reaches top_p (the first always stays); (…, V) → (…, V)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def sampling_transform(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Probabilities (…, V) from logits (…, V): softmax(logits / T) after top-k and nucleus truncation.

    float32 and float64 logits keep their dtype, lower precisions come back as float32; every row
    sums to 1. ``temperature == 0`` returns the one-hot row of the argmax (ties: the first index).
    """
    check_floating_tensor("logits", logits, -1)
    check_sampling(temperature, top_k, top_p)
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    if temperature == 0:
        argmax = logits.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(logits).scatter_(-1, argmax, 1.0)
    logits = logits / temperature
    if top_k is not None:
        logits = _keep_top_k(logits, top_k)
    if top_p is not None and top_p < 1:
        logits = _keep_nucleus(logits, top_p)
    return logits.softmax(dim=-1)
