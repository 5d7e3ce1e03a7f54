"""The book's BERT encoder (Devlin et al., 2018, arXiv 1810.04805), small enough to hold in your head.

A token sequence ``x`` (with segment ids ``s``) becomes one vector per token::

    h⁰ = LayerNorm(E_word[x_t] + E_pos[t] + E_type[s_t])                      embeddings
    for each layer ℓ = 1 … L  (post-norm: the residual *sum* is normalised)
        a  = LayerNorm(h + MHA(h))                                           self-attention
        hˡ = LayerNorm(a + GELU(a W₁ + b₁) W₂ + b₂)                         feed-forward

with multi-head self-attention over all tokens (no causal mask: an encoder reads both ways)::

    Q, K, V = h W_q, h W_k, h W_v            split into H heads of size d = D / H
    A_h     = softmax(Q_h K_hᵀ / √d + M)      M[b, j] = 0 for a real key j, a huge negative for padding
    MHA(h)  = concat_h(A_h V_h) W_o

Padding keys get weight exp(huge negative) = 0, so a padded batch gives every real token exactly
what it would get alone. Padding *query* rows are computed too (their outputs are ignored later).

Two routes through attention, one result:

* asked for the attention maps (for plots), the model computes ``A`` explicitly, as written above;
* otherwise it calls ``torch.nn.functional.scaled_dot_product_attention`` (SDPA), which fuses the
  three steps and never stores the (B, H, T, T) matrix; Q, K and V come from one fused projection
  ``h [W_q W_k W_v]``, one matrix multiply instead of three.

A section that studies another attention (a sliding window, a sparse kernel) swaps it in for SDPA
with :meth:`BertEncoder.swapped_attention`, for every layer or some of them, and gets the default
back when the ``with`` block ends.

Weights load from a Hugging Face–format checkpoint (``config.json`` + ``model.safetensors``) by an
explicit name map (:func:`checkpoint_sources`) that is checked key by key and shape by shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lib.validation import check_dtype, check_ndim, check_same_shape, check_tensor

__all__ = [
    "IGNORED_CHECKPOINT_KEYS",
    "AttentionFn",
    "BertConfig",
    "BertEncoder",
    "BertOutput",
    "EncoderLayer",
    "SelfAttention",
    "TokenEmbeddings",
    "checkpoint_sources",
    "load_bert",
    "padding_bias",
    "state_dict_from_checkpoint",
]


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BertConfig:
    """The sizes that define a BERT encoder (all-MiniLM-L6-v2: D = 384, L = 6, H = 12, 1536, 30522)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size: expected a multiple of num_heads={self.num_heads}, got {self.hidden_size}"
            )

    @property
    def head_dim(self) -> int:
        """d = D / H, the width of one attention head."""
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_dict(cls, cfg: Mapping[str, Any]) -> BertConfig:
        """Read a Hugging Face ``config.json`` of a BERT model; refuse variants this encoder does not implement."""
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"config hidden_act: expected 'gelu' (erf GELU), got {cfg['hidden_act']!r}")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"config position_embedding_type: expected 'absolute', got {cfg['position_embedding_type']!r}"
            )
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            intermediate_size=cfg["intermediate_size"],
            max_positions=cfg["max_position_embeddings"],
            type_vocab_size=cfg["type_vocab_size"],
            layer_norm_eps=cfg["layer_norm_eps"],
        )


@dataclass(frozen=True)
class BertOutput:
    """What one forward pass returns.

    hidden_states: L + 1 tensors (B, T, D): the embeddings h⁰, then each layer's output hˡ.
    attentions: L tensors (B, H, T, T) of attention weights A (rows sum to 1), or ``None`` when
        they were not requested (the fast SDPA route never forms them).
    """

    hidden_states: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...] | None

    @property
    def last_hidden_state(self) -> torch.Tensor:
        """(B, T, D): the top layer's output, hᴸ."""
        return self.hidden_states[-1]


# ----------------------------------------------------------------------------- the layers


class TokenEmbeddings(nn.Module):
    """h⁰ = LayerNorm(E_word[x_t] + E_pos[t] + E_type[s_t]): (B, T) ids → (B, T, D)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_positions, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,), broadcast over B
        return self.norm(self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids))


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive mask M: (B, T) of 1 (token) / 0 (padding) → (B, 1, 1, T) of 0 / the dtype's minimum.

    Broadcast over heads and query rows, it is added to the scores Q Kᵀ / √d before the softmax.
    """
    keep = attention_mask[:, None, None, :].bool()
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""attend(q, k, v, bias) → heads: Q, K, V (B, H, T, d), padding bias (B, 1, 1, T) → (B, H, T, d)."""


class SelfAttention(nn.Module):
    """MHA(h) = concat_h(softmax(Q_h K_hᵀ / √d + M) V_h) W_o, with Q, K, V from one fused projection.

    ``attend`` (default ``None``: SDPA) replaces the fused attention on the fast route.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attend: AttentionFn | None = None
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # rows: [W_q; W_k; W_v]
        self.out = nn.Linear(config.hidden_size, config.hidden_size)      # W_o

    def split_heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, D) → Q, K, V, each (B, H, T, d) (views of one (B, T, 3, H, d) projection)."""
        b, t, _ = h.shape
        qkv = self.qkv(h).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(
        self, h: torch.Tensor, bias: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h (B, T, D), bias (B, 1, 1, T) → MHA(h) (B, T, D) and A (B, H, T, T) if ``need_weights``."""
        q, k, v = self.split_heads(h)
        if need_weights and self.attend is not None:
            raise ValueError("output_attentions: the attention maps are those of dense softmax attention, "
                             "not of the swapped-in attention; ask for them outside swapped_attention")
        if self.attend is not None:
            heads = self.attend(q, k, v, bias)
            weights = None
        elif need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias  # (B, H, T, T)
            weights = torch.softmax(scores, dim=-1)
            heads = weights @ v                                                  # (B, H, T, d)
        else:
            weights = None
            heads = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)      # same, fused
        b, _, t, _ = heads.shape
        return self.out(heads.transpose(1, 2).reshape(b, t, -1)), weights


class EncoderLayer(nn.Module):
    """One post-norm layer: a = LayerNorm(h + MHA(h)); h' = LayerNorm(a + GELU(a W₁ + b₁) W₂ + b₂)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_in = nn.Linear(config.hidden_size, config.intermediate_size)   # W₁, b₁
        self.mlp_out = nn.Linear(config.intermediate_size, config.hidden_size)  # W₂, b₂
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, h: torch.Tensor, bias: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h (B, T, D), bias (B, 1, 1, T) → h' (B, T, D) and this layer's A (B, H, T, T) or ``None``."""
        mixed, weights = self.attention(h, bias, need_weights)
        a = self.attention_norm(h + mixed)
        return self.mlp_norm(a + self.mlp_out(F.gelu(self.mlp_in(a)))), weights


# ----------------------------------------------------------------------------- the encoder


class BertEncoder(nn.Module):
    """Embeddings, then ``num_layers`` encoder layers: (B, T) token ids → :class:`BertOutput`.

    Inference only as written (BERT's dropout is left out: it is the identity at evaluation).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = TokenEmbeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))

    @contextmanager
    def swapped_attention(self, attend: AttentionFn, layers: Iterable[int] | None = None) -> Iterator[None]:
        """Inside the ``with`` block, ``layers`` (default: all) compute heads = attend(q, k, v, bias) in
        place of SDPA (Q, K, V: (B, H, T, d), bias: (B, 1, 1, T) padding mask); restored on exit."""
        if not callable(attend):
            raise TypeError(f"attend: expected a function (q, k, v, bias) -> heads, got {type(attend).__name__}")
        chosen = list(range(self.config.num_layers) if layers is None else layers)
        for i in chosen:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.config.num_layers:
                raise ValueError(f"layers: expected layer indices in [0, {self.config.num_layers}), got {i!r}")
        previous = [self.layers[i].attention.attend for i in chosen]
        for i in chosen:
            self.layers[i].attention.attend = attend
        try:
            yield
        finally:
            for i, fn in zip(chosen, previous):
                self.layers[i].attention.attend = fn

    def check_inputs(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> None:
        """Raise a one-line error naming the argument when the inputs cannot be encoded."""
        check_tensor("input_ids", input_ids)
        check_ndim("input_ids", input_ids, "batch, tokens")
        check_dtype("input_ids", input_ids, (torch.int64, torch.int32))
        b, t = input_ids.shape
        if b == 0 or not 1 <= t <= self.config.max_positions:
            raise ValueError(
                f"input_ids: expected shape (B ≥ 1, 1 ≤ T ≤ {self.config.max_positions}), got {(b, t)}"
            )
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"input_ids: expected ids in [0, {self.config.vocab_size}), got ids in [{lo}, {hi}]")
        for name, x in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if x is not None:
                check_tensor(name, x)
                check_same_shape(name, x, "input_ids", input_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> BertOutput:
        """input_ids (B, T) int, attention_mask (B, T) 1 = token / 0 = padding (default: all tokens),
        token_type_ids (B, T) segment ids (default: all 0) → :class:`BertOutput`.

        ``output_attentions=True`` takes the explicit route and returns every layer's A.
        """
        self.check_inputs(input_ids, attention_mask, token_type_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.embeddings(input_ids, token_type_ids)
        bias = padding_bias(attention_mask, h.dtype)
        hidden, attentions = [h], []
        for layer in self.layers:
            h, weights = layer(h, bias, output_attentions)
            hidden.append(h)
            attentions.append(weights)
        return BertOutput(tuple(hidden), tuple(attentions) if output_attentions else None)


# ----------------------------------------------------------------------------- loading a checkpoint

IGNORED_CHECKPOINT_KEYS = frozenset({
    "embeddings.position_ids",  # a stored arange(512), not a weight: positions are computed
    "pooler.dense.weight",      # the pooler (tanh layer on [CLS]) served BERT's next-sentence
    "pooler.dense.bias",        # pretraining task; sentence embeddings mean-pool instead
})
"""Checkpoint entries the book's encoder reads nothing from (they may be present or not)."""


def checkpoint_sources(config: BertConfig) -> dict[str, tuple[str, ...]]:
    """Each parameter of :class:`BertEncoder` → the checkpoint key(s) it is made of.

    Several keys are concatenated along the first axis (the fused Q/K/V projection); one key is
    copied as it is. The checkpoint names are those of Hugging Face's ``BertModel``.
    """
    sources = {
        "embeddings.word.weight": ("embeddings.word_embeddings.weight",),
        "embeddings.position.weight": ("embeddings.position_embeddings.weight",),
        "embeddings.token_type.weight": ("embeddings.token_type_embeddings.weight",),
        "embeddings.norm.weight": ("embeddings.LayerNorm.weight",),
        "embeddings.norm.bias": ("embeddings.LayerNorm.bias",),
    }
    for i in range(config.num_layers):
        ours, theirs = f"layers.{i}", f"encoder.layer.{i}"
        for kind in ("weight", "bias"):
            sources[f"{ours}.attention.qkv.{kind}"] = tuple(
                f"{theirs}.attention.self.{part}.{kind}" for part in ("query", "key", "value")
            )
            sources[f"{ours}.attention.out.{kind}"] = (f"{theirs}.attention.output.dense.{kind}",)
            sources[f"{ours}.attention_norm.{kind}"] = (f"{theirs}.attention.output.LayerNorm.{kind}",)
            sources[f"{ours}.mlp_in.{kind}"] = (f"{theirs}.intermediate.dense.{kind}",)
            sources[f"{ours}.mlp_out.{kind}"] = (f"{theirs}.output.dense.{kind}",)
            sources[f"{ours}.mlp_norm.{kind}"] = (f"{theirs}.output.LayerNorm.{kind}",)
    return sources


def _check_keys(sources: Mapping[str, tuple[str, ...]], checkpoint: Mapping[str, torch.Tensor]) -> None:
    needed = {key for keys in sources.values() for key in keys}
    missing = sorted(needed - checkpoint.keys())
    if missing:
        raise KeyError(f"checkpoint: missing {len(missing)} key(s) the encoder needs, e.g. {missing[:3]}")
    unexpected = sorted(checkpoint.keys() - needed - IGNORED_CHECKPOINT_KEYS)
    if unexpected:
        raise KeyError(
            f"checkpoint: {len(unexpected)} unexpected key(s) the encoder has no place for: {unexpected[:3]}"
        )


def state_dict_from_checkpoint(model: BertEncoder, checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Build ``model``'s state dict from a checkpoint's tensors, checking every key and shape.

    Raises ``KeyError`` naming missing or unexpected checkpoint keys and ``ValueError`` naming a
    checkpoint tensor whose shape is not the one its parameter needs.
    """
    sources = checkpoint_sources(model.config)
    _check_keys(sources, checkpoint)
    state = {}
    for name, param in model.state_dict().items():
        keys = sources[name]
        part_shape = (param.shape[0] // len(keys), *param.shape[1:])  # each key fills an equal slice of rows
        for key in keys:
            if tuple(checkpoint[key].shape) != part_shape:
                raise ValueError(
                    f"checkpoint[{key!r}]: expected shape {part_shape} for {name}, got {tuple(checkpoint[key].shape)}"
                )
        state[name] = torch.cat([checkpoint[key] for key in keys]) if len(keys) > 1 else checkpoint[keys[0]]
    return state


def load_bert(directory: Path | str) -> BertEncoder:
    """A :class:`BertEncoder` in evaluation mode from ``directory``/{config.json, model.safetensors}."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = BertConfig.from_hf_dict(json.loads((directory / "config.json").read_text()))
    model = BertEncoder(config)
    model.load_state_dict(state_dict_from_checkpoint(model, load_file(directory / "model.safetensors")))
    return model.eval()
