"""Scoring many guesses in one pass: a decoder forward with explicit positions and a boolean mask.

Lookahead decoding (07.4) and tree verification feed tokens that do not form one left-to-right
sequence: several guesses share a position, and each query may see only some of the new keys.
The model is the same function; only two inputs change:

    positions p_t       (RoPE angles / position embeddings of each new token)
    visibility M[q, k]  (True: query q may attend to key k)

    A = softmax(q kᵀ / √Dh + log M),     log M = 0 where visible, −∞ elsewhere

Every query must see itself, so each row of A is defined. :func:`masked_forward` runs a
:class:`~lib.models.decoder.Decoder`'s own modules with these inputs (the cache is written as usual,
in input order; the caller truncates what it does not keep). :func:`extend_mask` puts a block's mask
behind a cache and a few committed tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lib.models.decoder import Decoder, KVCache, apply_rope
from lib.validation import check_tensor

__all__ = ["extend_mask", "masked_forward"]


def extend_mask(block: torch.Tensor, n_before: int, cached: int) -> torch.Tensor:
    """The (Tq, Tk) mask of [n_before committed tokens ; block (T, T)] after ``cached`` cached keys.

    Tq = n_before + T, Tk = cached + Tq. Cached keys are visible to all; the committed tokens are
    causal among themselves and visible to the whole block; the block keeps its own mask.
    """
    t = block.shape[0]
    new = torch.ones(n_before + t, n_before + t, dtype=torch.bool).tril()
    new[n_before:, n_before:] = block
    return torch.cat([torch.ones(n_before + t, cached, dtype=torch.bool), new], dim=1)


def _check_supported(model: Decoder) -> None:
    c = model.config
    if c.mixer != "attention" or c.mlp == "causal_act" or c.positions == "alibi":
        raise ValueError(
            "model: masked_forward needs attention layers, a position-wise MLP and rope/learned/sinusoidal/no "
            f"positions, got mixer={c.mixer!r}, mlp={c.mlp!r}, positions={c.positions!r}"
        )


def _attention(
    block: torch.nn.Module,
    x: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor] | None,
    mask: torch.Tensor,
    cache: KVCache,
    layer: int,
) -> torch.Tensor:
    """A block's self-attention with the boolean ``mask`` (Tq, Tk) instead of the causal one."""
    attn, (b, t, d) = block.attn, x.shape
    q, k, v = (part.view(b, t, attn.n_heads, d // attn.n_heads).transpose(1, 2)
               for part in attn.qkv(x).split(d, dim=-1))
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    k, v = cache.write(layer, k, v)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out(y.transpose(1, 2).flatten(2))


@torch.no_grad()
def masked_forward(
    model: Decoder, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: KVCache
) -> torch.Tensor:
    """Logits (1, T, V) of new tokens ids (1, T) at ``positions`` (T,) seeing keys by ``mask`` (T, L + T).

    L = cache.length; the new keys and values are written at [L, L + T) and the cache advances by T.
    With positions L … L + T − 1 and a causal mask this is exactly ``model(ids, cache)``.
    """
    _check_supported(model)
    check_tensor("ids", ids)
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"ids: expected shape (1, T), got {tuple(ids.shape)}")
    t = ids.shape[1]
    if tuple(positions.shape) != (t,):
        raise ValueError(f"positions: expected shape ({t},), got {tuple(positions.shape)}")
    if tuple(mask.shape) != (t, cache.length + t) or mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor of shape ({t}, {cache.length + t}), got {mask.dtype} {tuple(mask.shape)}")
    if int(positions.max()) >= model.config.max_seq_len:
        raise ValueError(f"positions: expected values < max_seq_len {model.config.max_seq_len}, got {int(positions.max())}")
    x = model.tok_emb(ids)
    if model.pos_emb is not None:
        x = x + model.pos_emb(positions)
    if model.config.positions == "sinusoidal":
        x = x + model.sinusoids[positions]
    rope = (model.rope_cos[positions], model.rope_sin[positions]) if model.config.positions == "rope" else None
    for layer, block in enumerate(model.blocks):
        if block.prenorm:
            x = x + _attention(block, block.norm1(x), rope, mask, cache, layer)
            x = x + block.mlp(block.norm2(x))
        else:
            x = block.norm1(x + _attention(block, x, rope, mask, cache, layer))
            x = block.norm2(x + block.mlp(x))
    cache.advance(t)
    if model.norm_f is not None:
        x = model.norm_f(x)
    return model.lm_head(x)
