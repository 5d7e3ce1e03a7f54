"""A tiny decoder-only transformer (GPT-style), small enough to hold in your head.

Token ids ``x₀ … x_{T-1}`` become next-token logits::

    h⁰ = E[x_t] (+ P[t] for learned or sinusoidal positions)
    for each layer ℓ = 1 … L
        pre-norm:   h = h + Attn(N₁(h));   h = h + MLP(N₂(h))
        post-norm:  h = N₁(h + Attn(h));   h = N₂(h + MLP(h))
    logits = N_f(h) Wᵀ            (N_f only with pre-norm; W = E when the embeddings are tied)

with causal multi-head self-attention over H heads of size Dh = d_model / H::

    q, k, v = h W_qkv                          each split into (B, H, T, Dh)
    q, k    = RoPE(q), RoPE(k)                 only for positions="rope"
    A       = softmax(q kᵀ / √Dh + bias + M)   M = −∞ where a key lies in the query's future,
                                               bias = ALiBi's −m_h·(i − j) for positions="alibi"
    Attn(h) = concat_h(A v) W_o

Two drop-in options replace attention's mixing of positions or the MLP's activation with the
parameter-free causal activation of section 01.6 (:mod:`lib.mixers.causal_activation`), applied
along the sequence: ``mixer="causal_act"`` makes the sublayer ``Attn(h)`` into ``f(h)``, and
``mlp="causal_act"`` makes the MLP ``f(x W₁) W₂``, with ``f_t = r(h_t, h_{t−1}) (+ mean_{s≤t} h_s)``.

Generation feeds the model its own samples. A :class:`KVCache` keeps every layer's keys and values,
so a step only computes the new token's row of the attention matrix: per-token cost becomes nearly
flat in the context length instead of growing with it (``lib.cost`` counts both). A causal
activation needs only the previous input and a running sum, which the same cache keeps.

Attention goes through a named *backend* ``fn(q, k, v, *, causal, bias) -> out``: ``"naive"``
writes the scores out, ``"sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention``; others
are added with :func:`register_attention_backend`. Under :func:`capture`, attention is computed the
naive way so its probabilities can be recorded. There is no dropout: training and evaluation
compute the same function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lib.mixers.causal_activation import MODES as CAUSAL_MODES
from lib.mixers.causal_activation import CausalActivation, Past
from lib.validation import check_choice, check_dtype, check_ndim, check_positive_int, check_sampling, check_tensor

__all__ = [
    "CAPTURE_KINDS",
    "MIXERS",
    "MLPS",
    "NORMS",
    "POSITIONS",
    "CausalMixer",
    "Decoder",
    "DecoderConfig",
    "KVCache",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "attention_backends",
    "attention_probs",
    "capture",
    "causal_mask",
    "naive_attention",
    "register_attention_backend",
    "rope_angles",
    "sample_next_token",
    "sdpa_attention",
    "sinusoidal_table",
]

POSITIONS = ("none", "learned", "sinusoidal", "rope", "alibi")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "causal_act")
MIXERS = ("attention", "causal_act")
CAPTURE_KINDS = ("residual", "attn_probs")
ROPE_BASE = 10000.0
INIT_STD = 0.02

AttentionBackend = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------- attention backends


def causal_mask(tq: int, tk: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (tq, tk) mask, True where query i may see key j: ``j ≤ (tk − tq) + i``.

    The queries are the *last* tq of the tk positions (bottom-right alignment), so a block of new
    tokens at positions [L, L + tq) sees keys [0, L + i] — right for a full pass (tq = tk) and for
    incremental decoding with a cache alike.
    """
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)


def _additive_mask(
    tq: int, tk: int, *, causal: bool, bias: torch.Tensor | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Float mask added to the scores: ``bias`` (or 0) where allowed, −∞ in the future; (…, tq, tk)."""
    mask = torch.zeros(tq, tk, dtype=dtype, device=device) if bias is None else bias.to(dtype)
    if causal:
        mask = mask.masked_fill(~causal_mask(tq, tk, device), float("-inf"))
    return mask


def attention_probs(
    q: torch.Tensor, k: torch.Tensor, *, causal: bool, bias: torch.Tensor | None
) -> torch.Tensor:
    """Attention probabilities ``A = softmax(q kᵀ / √Dh + bias + M)``, (B, H, Tq, Tk).

    q is (B, H, Tq, Dh), k is (B, H, Tk, Dh); ``bias`` broadcasts to (B, H, Tq, Tk); ``M`` is −∞ for
    future keys when ``causal`` (see :func:`causal_mask`). Each row sums to one.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal or bias is not None:
        scores = scores + _additive_mask(
            q.shape[-2], k.shape[-2], causal=causal, bias=bias, dtype=scores.dtype, device=scores.device
        )
    return torch.softmax(scores, dim=-1)


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, bias: torch.Tensor | None
) -> torch.Tensor:
    """The textbook route: ``A v`` with ``A`` from :func:`attention_probs` written out; → (B, H, Tq, Dh)."""
    return attention_probs(q, k, causal=causal, bias=bias) @ v


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, bias: torch.Tensor | None
) -> torch.Tensor:
    """The same function through PyTorch's fused ``scaled_dot_product_attention``; → (B, H, Tq, Dh).

    SDPA's ``is_causal`` aligns the mask top-left, which is only right when tq = tk; a decode block
    (tq < tk) or an ALiBi bias therefore goes in as an explicit float ``attn_mask``. A single query
    row needs no mask: it is the newest token and may see every key.
    """
    tq, tk = q.shape[-2], k.shape[-2]
    if bias is None and (not causal or tq == 1):
        return F.scaled_dot_product_attention(q, k, v)
    if bias is None and tq == tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = _additive_mask(tq, tk, causal=causal, bias=bias, dtype=q.dtype, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


_BACKENDS: dict[str, AttentionBackend] = {"naive": naive_attention, "sdpa": sdpa_attention}
_BUILTIN_BACKENDS = frozenset(_BACKENDS)


def register_attention_backend(name: str, fn: AttentionBackend) -> None:
    """Make ``fn(q, k, v, *, causal: bool, bias: Tensor | None) -> out`` usable as ``DecoderConfig(attention=name)``.

    q (B, H, Tq, Dh), k and v (B, H, Tk, Dh) with Tq ≤ Tk; the queries are the last Tq positions
    (see :func:`causal_mask`); ``bias`` broadcasts to (B, H, Tq, Tk) and is added to the scaled
    scores; out is (B, H, Tq, Dh). Registering a name again replaces it, except the built-ins.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty str, got {name!r}")
    if name in _BUILTIN_BACKENDS:
        raise ValueError(f"name: {name!r} is a built-in attention backend and cannot be replaced")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable attention backend, got {type(fn).__name__}")
    _BACKENDS[name] = fn


def attention_backends() -> tuple[str, ...]:
    """The names ``DecoderConfig.attention`` accepts now."""
    return tuple(_BACKENDS)


# ----------------------------------------------------------------------------- configuration


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")


@dataclass(frozen=True)
class DecoderConfig:
    """Every size and design choice of a :class:`Decoder`; checked on construction.

    ``d_ff`` (the MLP's hidden width) defaults to 4·d_model for ``"gelu"`` and ``"causal_act"``
    and to 8/3·d_model rounded up to a multiple of 16 for ``"swiglu"`` (same parameter count with
    three matrices); :attr:`ffn_dim` is the resolved value.

    ``mixer`` mixes positions by ``"attention"`` or by the ``"causal_act"`` activation;
    ``causal_mode`` (min, max, mean) and ``causal_context`` (add the running mean) configure every
    causal activation of the model, in the mixer and in an ``mlp="causal_act"`` alike.
    """

    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    max_seq_len: int = 256
    positions: str = "rope"
    norm: str = "layernorm"
    prenorm: bool = True
    mlp: str = "gelu"
    d_ff: int | None = None
    attention: str = "sdpa"
    tie_embeddings: bool = True
    mixer: str = "attention"
    causal_mode: str = "min"
    causal_context: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model: expected a multiple of n_heads={self.n_heads}, got {self.d_model}"
            )
        check_choice("positions", self.positions, POSITIONS)
        check_choice("norm", self.norm, NORMS)
        check_choice("mlp", self.mlp, MLPS)
        check_choice("mixer", self.mixer, MIXERS)
        check_choice("causal_mode", self.causal_mode, CAUSAL_MODES)
        _check_bool("causal_context", self.causal_context)
        if self.attention not in _BACKENDS:
            raise ValueError(
                f"attention: expected one of {', '.join(map(repr, _BACKENDS))} "
                f"(or a name added with register_attention_backend), got {self.attention!r}"
            )
        if self.d_ff is not None:
            check_positive_int("d_ff", self.d_ff)
        _check_bool("prenorm", self.prenorm)
        _check_bool("tie_embeddings", self.tie_embeddings)
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"d_model: RoPE rotates pairs, so d_model/n_heads must be even, got {self.head_dim}")
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"d_model: sinusoidal positions pair sin and cos, expected even, got {self.d_model}")

    @property
    def head_dim(self) -> int:
        """Dh = d_model / n_heads."""
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """The MLP's hidden width: ``d_ff``, or its default for ``mlp`` (see the class docstring)."""
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp != "swiglu":
            return 4 * self.d_model
        return 16 * math.ceil(8 * self.d_model / 3 / 16)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields, the inverse of :meth:`from_dict`.

        The causal-activation fields are left out while they hold their defaults, so the dict of a
        plain transformer is the one its checkpoint was written with before those fields existed.
        """
        return {k: v for k, v in asdict(self).items() if _LATER_DEFAULTS.get(k, _ABSENT) != v}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DecoderConfig:
        """Build a config from :meth:`to_dict`'s output; unknown keys are an error, not ignored."""
        if not isinstance(d, Mapping):
            raise TypeError(f"d: expected a mapping of config fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"d: unknown DecoderConfig field(s) {unknown}; expected some of {sorted(known)}")
        if "vocab_size" not in d:
            raise ValueError("d: expected a 'vocab_size' entry, the one field without a default")
        return cls(**d)


_ABSENT = object()
_LATER_DEFAULTS = {"mixer": "attention", "causal_mode": "min", "causal_context": False}


# ----------------------------------------------------------------------------- the KV cache


@dataclass(eq=False)
class KVCache:
    """What generation keeps of the first ``length`` positions, preallocated.

    ``keys[ℓ]`` and ``values[ℓ]`` are (B, H, T_max, Dh) for every attention layer ℓ; positions
    [0, length) are filled. A causal activation (site ``"ℓ.mixer"`` or ``"ℓ.mlp"``) keeps its
    inputs ``inputs[site]`` and their prefix sums ``sums[site]``, each (B, T_max, D): the previous
    input and the running sum are all it needs. A forward pass writes its new tokens at
    [length, length + t) and :meth:`advance` then moves ``length``; :meth:`truncate` rolls back
    (e.g. rejected speculative tokens). Memory: 2 · n_layers · B · T_max · d_model elements for
    attention, 2 · B · T_max · D per causal-activation site.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)

    def _first(self) -> torch.Tensor:
        """A (B, …, T_max, …) buffer to read the batch size and capacity from."""
        return self.keys[0] if self.keys else next(iter(self.inputs.values()))

    @property
    def batch_size(self) -> int:
        return self._first().shape[0]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2] if self.keys else self._first().shape[1]

    def _end(self, t: int) -> int:
        end = self.length + t
        if end > self.max_len:
            raise ValueError(f"cache: {end} positions would exceed its capacity of {self.max_len}")
        return end

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer ``layer``'s new k, v (B, H, t, Dh) at [length, length + t).

        Returns every key and value so far, views (B, H, length + t, Dh).
        """
        end = self._end(k.shape[2])
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def write_inputs(self, site: str, x: torch.Tensor) -> Past | None:
        """Store a causal activation's new inputs x (B, t, D) at [length, length + t).

        Returns the :class:`~lib.mixers.causal_activation.Past` of the positions before them: the
        input at ``length − 1`` and the sum over [0, length); None when x starts the sequence.
        """
        end, inputs, sums = self._end(x.shape[1]), self.inputs[site], self.sums[site]
        inputs[:, self.length:end] = x
        if self.length == 0:
            sums[:, :end] = torch.cumsum(x, dim=1)
            return None
        before = sums[:, self.length - 1].clone()
        sums[:, self.length:end] = before[:, None] + torch.cumsum(x, dim=1)
        return Past(inputs[:, self.length - 1].clone(), before, self.length)

    def advance(self, t: int) -> None:
        """Count ``t`` more positions as filled (after every layer has written them)."""
        self.length += t

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on (0 ≤ length ≤ the current length)."""
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= self.length:
            raise ValueError(f"length: expected an int in [0, {self.length}], got {length!r}")
        self.length = length


# ----------------------------------------------------------------------------- positions


def sinusoidal_table(n_positions: int, d_model: int) -> torch.Tensor:
    """Vaswani et al.'s fixed positions, (n_positions, d_model).

    ``P[p, 2i] = sin(p ω_i)``, ``P[p, 2i+1] = cos(p ω_i)`` with ``ω_i = 10000^(−2i/d)``.
    """
    omega = ROPE_BASE ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * omega
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(n_positions, d_model).float()


def rope_angles(n_positions: int, head_dim: int) -> torch.Tensor:
    """RoPE's rotation angles (n_positions, Dh/2): ``θ[p, i] = p · 10000^(−2i/Dh)``."""
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return (torch.arange(n_positions, dtype=torch.float64)[:, None] * inv_freq).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+Dh/2}) of x (B, H, T, Dh) by the angle θ[t, i]; cos, sin are (T, Dh/2).

    ``(a, b) ↦ (a cos θ − b sin θ, a sin θ + b cos θ)``. Pairing dimension i with i + Dh/2 (rather
    than 2i with 2i+1 as in the paper) is a fixed permutation of the head's dimensions: same model.
    Then ``⟨R_m q, R_n k⟩`` depends on m − n only.
    """
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes m_h (n_heads,) (Press et al., arXiv 2108.12409).

    For H a power of two, ``m_h = 2^(−8h/H)``, h = 1 … H. Otherwise the paper takes the slopes of
    the power of two n below H and fills up with every other slope of 2n.
    """
    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    n = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(n) + geometric(2 * n)[::2][: n_heads - n]
    return torch.tensor(slopes)


def alibi_bias(slopes: torch.Tensor, q_pos: torch.Tensor, tk: int) -> torch.Tensor:
    """ALiBi's score bias (H, Tq, tk): ``−m_h · (i − j)`` for query position i and key position j."""
    k_pos = torch.arange(tk, device=q_pos.device)
    distance = (k_pos[None, :] - q_pos[:, None]).to(slopes.dtype)
    return slopes[:, None, None] * distance


# ----------------------------------------------------------------------------- layers


def make_norm(kind: str, d_model: int) -> nn.Module:
    """A norm over the last axis, ε = 1e-5.

    LayerNorm ``γ (x − mean) / √(var + ε) + β``; RMSNorm ``γ x / √(mean(x²) + ε)``.
    """
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=1e-5)
    return nn.RMSNorm(d_model, eps=1e-5)


class MLP(nn.Module):
    """The position-wise feed-forward network, (B, T, d) → (B, T, d).

    gelu:       ``GELU(x W₁) W₂``                  two matrices d×ff, ff×d
    swiglu:     ``(SiLU(x W_g) ⊙ x W_u) W₂``       three (Shazeer, arXiv 2002.05202)
    causal_act: ``f(x W₁) W₂``                     two; f is the causal activation along T, so this
                                                   MLP mixes each position with earlier ones

    A causal activation continues from ``cache`` (site ``"ℓ.mlp"``) when one is passed.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d, ff = config.d_model, config.ffn_dim
        self.gated = config.mlp == "swiglu"
        self.up = nn.Linear(d, ff, bias=False)
        self.gate = nn.Linear(d, ff, bias=False) if self.gated else None
        self.down = nn.Linear(ff, d, bias=False)
        self.causal = (
            CausalActivation(config.causal_mode, config.causal_context) if config.mlp == "causal_act" else None
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        if self.causal is not None:
            hidden = self.up(x)
            past = cache.write_inputs(f"{layer}.mlp", hidden) if cache is not None else None
            return self.down(self.causal(hidden, past))
        hidden = F.silu(self.gate(x)) * self.up(x) if self.gated else F.gelu(self.up(x))
        return self.down(hidden)


class CausalMixer(nn.Module):
    """The attention sublayer replaced by the causal activation: ``Mix(h) = f(h)``, (B, T, d) → (B, T, d).

    No parameters (the book's reading of the paper's parameter-free replacement). Positions are
    not encoded: the order enters only through f's look at the previous position and the running
    mean. With a ``cache`` it continues from the stored previous input and sum (site ``"ℓ.mixer"``).
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.act = CausalActivation(config.causal_mode, config.causal_context)

    def forward(self, x: torch.Tensor, *, cache: KVCache | None, layer: int, **unused: Any) -> torch.Tensor:
        past = cache.write_inputs(f"{layer}.mixer", x) if cache is not None else None
        return self.act(x, past)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, (B, T, d) → (B, T, d), through the configured backend.

    While ``probs_sink`` is set (by :func:`capture`), the probabilities are computed explicitly and
    handed to it, whatever the backend.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.n_heads, self.backend = config.n_heads, config.attention
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)
        self.probs_sink: Callable[[torch.Tensor], None] | None = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) → (B, H, T, Dh)."""
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        bias: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        q, k, v = (self._heads(part) for part in self.qkv(x).split(x.shape[-1], dim=-1))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.write(layer, k, v)
        if self.probs_sink is not None:
            probs = attention_probs(q, k, causal=True, bias=bias)
            self.probs_sink(probs)
            y = probs @ v
        else:
            y = _BACKENDS[self.backend](q, k, v, causal=True, bias=bias)
        return self.out(y.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """One layer: a mixer then an MLP, each wrapped in a residual connection and a norm (pre or post).

    The mixer ``attn`` is :class:`CausalSelfAttention`, or :class:`CausalMixer` for
    ``mixer="causal_act"``.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.prenorm = config.prenorm
        self.norm1, self.norm2 = make_norm(config.norm, config.d_model), make_norm(config.norm, config.d_model)
        self.attn = CausalSelfAttention(config) if config.mixer == "attention" else CausalMixer(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, **attn_args: Any) -> torch.Tensor:
        cache, layer = attn_args.get("cache"), attn_args.get("layer", 0)
        if self.prenorm:
            x = x + self.attn(self.norm1(x), **attn_args)
            return x + self.mlp(self.norm2(x), cache, layer)
        x = self.norm1(x + self.attn(x, **attn_args))
        return self.norm2(x + self.mlp(x, cache, layer))


# ----------------------------------------------------------------------------- sampling


def sample_next_token(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw one token per row of logits (B, V) → (B,).

    temperature 0 is greedy (argmax). Otherwise ``p ∝ exp(logits / temperature)`` restricted to the
    ``top_k`` largest logits, then to the nucleus: the fewest most-likely tokens whose probability
    adds up to at least ``top_p`` (the most likely token always stays).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ----------------------------------------------------------------------------- the model


class Decoder(nn.Module):
    """The decoder-only transformer of the module docstring; ``forward`` maps ids (B, T) to logits (B, T, V)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        if not isinstance(config, DecoderConfig):
            raise TypeError(f"config: expected a DecoderConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model) if config.positions == "learned" else None
        if config.positions == "sinusoidal":
            self.register_buffer("sinusoids", sinusoidal_table(config.max_seq_len, config.d_model), persistent=False)
        if config.positions == "rope":
            angles = rope_angles(config.max_seq_len, config.head_dim)
            self.register_buffer("rope_cos", angles.cos(), persistent=False)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)
        if config.positions == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(config.n_heads), persistent=False)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm_f = make_norm(config.norm, config.d_model) if config.prenorm else None
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2's initialisation: every matrix ~ N(0, 0.02²), norms at γ = 1, β = 0.

        The matrices that write into the residual stream (attention's W_o, the MLP's W₂) get std
        0.02/√(2·n_layers), so the stream's variance does not grow with depth.
        """
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = residual_std if name.endswith(("attn.out.weight", "mlp.down.weight")) else INIT_STD
                nn.init.normal_(p, mean=0.0, std=std)

    # -- input checks

    def _check_ids(self, ids: Any, cache: KVCache | None) -> None:
        check_tensor("ids", ids)
        check_dtype("ids", ids, (torch.long, torch.int32))
        check_ndim("ids", ids, "batch, tokens")
        if ids.shape[1] == 0:
            raise ValueError(f"ids: expected at least one token, got shape {tuple(ids.shape)}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(
                f"ids: expected token ids in [0, {self.config.vocab_size}) (vocab_size), got values in [{lo}, {hi}]"
            )
        cached = 0
        if cache is not None:
            if not isinstance(cache, KVCache):
                raise TypeError(f"cache: expected a KVCache from new_cache(), got {type(cache).__name__}")
            expected_layout = (ids.shape[0], self._attention_layers(), self._causal_sites())
            layout = (cache.batch_size, len(cache.keys), sorted(cache.inputs))
            if layout != expected_layout:
                raise ValueError(
                    f"cache: expected one for batch {ids.shape[0]}, {expected_layout[1]} attention layers and "
                    f"causal-activation sites {expected_layout[2]}, got batch {layout[0]}, {layout[1]} "
                    f"attention layers and sites {layout[2]}"
                )
            cached = cache.length
        if cached + ids.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"ids: context of {cached + ids.shape[1]} tokens ({cached} cached + {ids.shape[1]} new) "
                f"exceeds max_seq_len {self.config.max_seq_len}"
            )

    # -- forward

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T): ``head(run_layers(embed(ids), 0, n_layers))``.

        With a ``cache``, ``ids`` are the *new* tokens: their positions continue from
        ``cache.length``, they attend to the cached keys and themselves, and the cache is extended
        in place.
        """
        self._check_ids(ids, cache)
        start = cache.length if cache is not None else 0
        x = self.run_layers(self.embed(ids, start), 0, self.config.n_layers, cache)
        if cache is not None:
            cache.advance(ids.shape[1])
        return self.head(x)

    # -- the layer-split API: forward = head ∘ run_layers(0, L) ∘ embed

    def embed(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The residual stream entering block 0, (B, T, d_model), for ids (B, T) at positions start … start + T − 1.

        ``h⁰ = E[x_t]`` plus ``P[t]`` for learned or sinusoidal positions (RoPE and ALiBi act
        inside attention instead). ``ids`` are not checked here; :meth:`forward` does that.
        """
        positions = self._positions(start, ids.shape[1], ids.device)
        x = self.tok_emb(ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        if self.config.positions == "sinusoidal":
            x = x + self.sinusoids[positions]
        return x

    def run_layers(self, h: torch.Tensor, first: int, last: int, cache: KVCache | None = None) -> torch.Tensor:
        """Blocks ``first … last − 1`` applied to the residual stream h (B, T, d_model) → (B, T, d_model).

        The T rows sit at positions ``cache.length …`` (0 … without a cache). Each block writes its
        keys and values into ``cache`` at those positions; the caller calls ``cache.advance(T)``
        once every block that shares this cache has run. Separate caches for separate layer
        ranges may therefore hold different lengths (DMTD's early and late layers, 07.7).
        """
        check_tensor("h", h)
        if h.ndim != 3 or h.shape[-1] != self.config.d_model:
            raise ValueError(f"h: expected shape (batch, tokens, {self.config.d_model}), got {tuple(h.shape)}")
        n = self.config.n_layers
        for name, value in (("first", first), ("last", last)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= n:
                raise ValueError(f"{name}: expected an int in [0, {n}] (n_layers), got {value!r}")
        if first > last:
            raise ValueError(f"last: expected last ≥ first = {first}, got {last}")
        start = cache.length if cache is not None else 0
        if start + h.shape[1] > self.config.max_seq_len:
            raise ValueError(f"h: positions up to {start + h.shape[1]} exceed max_seq_len {self.config.max_seq_len}")
        positions = self._positions(start, h.shape[1], h.device)
        rope = (self.rope_cos[positions], self.rope_sin[positions]) if self.config.positions == "rope" else None
        keys = start + h.shape[1]  # every pass attends to positions [0, start + T)
        bias = alibi_bias(self.alibi_slopes, positions, keys) if self.config.positions == "alibi" else None
        for layer in range(first, last):
            h = self.blocks[layer](h, rope=rope, bias=bias, cache=cache, layer=layer)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) from the last block's output h (B, T, d_model): ``N_f(h) Wᵀ``."""
        if self.norm_f is not None:
            h = self.norm_f(h)
        return self.lm_head(h)

    @staticmethod
    def _positions(start: int, t: int, device: torch.device) -> torch.Tensor:
        return torch.arange(start, start + t, device=device)

    def _attention_layers(self) -> int:
        return self.config.n_layers if self.config.mixer == "attention" else 0

    def _causal_sites(self) -> list[str]:
        """Names of the causal activations, ``"ℓ.mixer"`` and ``"ℓ.mlp"``, sorted."""
        uses = {"mixer": self.config.mixer, "mlp": self.config.mlp}
        kinds = [kind for kind, used in uses.items() if used == "causal_act"]
        return sorted(f"{layer}.{kind}" for layer in range(self.config.n_layers) for kind in kinds)

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` sequences of up to ``max_seq_len`` tokens.

        On the model's device, in its dtype: keys and values for every attention layer, inputs and
        prefix sums for every causal activation.
        """
        check_positive_int("batch_size", batch_size)
        c = self.config
        like = self.tok_emb.weight

        def empty(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=like.dtype, device=like.device)

        kv = (batch_size, c.n_heads, c.max_seq_len, c.head_dim)
        n = self._attention_layers()
        width = {"mixer": c.d_model, "mlp": c.ffn_dim}
        sites = {site: width[site.split(".")[1]] for site in self._causal_sites()}
        return KVCache(
            [empty(*kv) for _ in range(n)],
            [empty(*kv) for _ in range(n)],
            inputs={site: empty(batch_size, c.max_seq_len, d) for site, d in sites.items()},
            sums={site: empty(batch_size, c.max_seq_len, d) for site, d in sites.items()},
        )

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Continue ``prompt`` (B, T0) or (T0,) by ``max_new_tokens`` sampled tokens → (B, T0 + n) or (T0 + n,).

        Sampling is :func:`sample_next_token`, driven by a local ``torch.Generator`` seeded with
        ``seed`` (the global RNG is untouched). With ``use_cache`` the prompt is run once and each
        new token costs one single-token pass; without it, every step recomputes the whole prefix.
        The result must fit in ``max_seq_len``.
        """
        check_tensor("prompt", prompt)
        if prompt.ndim not in (1, 2):
            raise ValueError(f"prompt: expected shape (batch, tokens) or (tokens,), got {tuple(prompt.shape)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: expected an int ≥ 0, got {max_new_tokens!r}")
        check_sampling(temperature, top_k, top_p)
        seq = prompt if prompt.ndim == 2 else prompt[None]
        total = seq.shape[1] + max_new_tokens
        if total > self.config.max_seq_len:
            raise ValueError(
                f"max_new_tokens: prompt {seq.shape[1]} + {max_new_tokens} new = {total} tokens "
                f"exceeds max_seq_len {self.config.max_seq_len}"
            )
        generator = torch.Generator(device=seq.device).manual_seed(seed)
        cache = self.new_cache(seq.shape[0]) if use_cache else None
        new_ids = seq
        for _ in range(max_new_tokens):
            logits = self(new_ids, cache)[:, -1] if use_cache else self(seq)[:, -1]
            token = sample_next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            new_ids = token[:, None].to(seq.dtype)
            seq = torch.cat([seq, new_ids], dim=1)
        return seq if prompt.ndim == 2 else seq[0]

    def num_parameters(self) -> int:
        """Trainable parameters, a tied embedding counted once (``lib.cost.parameter_count`` predicts it)."""
        return sum(p.numel() for p in self.parameters())

    # -- checkpoints

    @classmethod
    def from_state(
        cls, config: DecoderConfig | Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
    ) -> Decoder:
        """A model built from ``config`` (or its dict) carrying the tensors of ``state_dict``.

        Every key and shape is checked first; the first mismatch is named (missing, unexpected, or
        the two shapes), and a checkpoint whose untied head differs from its embedding is refused
        by a config that ties them.
        """
        config = config if isinstance(config, DecoderConfig) else DecoderConfig.from_dict(config)
        model = cls(config)
        expected = model.state_dict()
        for key, tensor in expected.items():
            if key not in state_dict:
                raise ValueError(f"state_dict: missing tensor {key!r} that the config expects")
            got = tuple(state_dict[key].shape)
            if got != tuple(tensor.shape):
                raise ValueError(
                    f"state_dict: tensor {key!r} has shape {got}, the config expects {tuple(tensor.shape)}"
                )
        unexpected = sorted(set(state_dict) - set(expected))
        if unexpected:
            raise ValueError(f"state_dict: unexpected tensor {unexpected[0]!r} (not in a model of this config)")
        if config.tie_embeddings and not torch.equal(state_dict["tok_emb.weight"], state_dict["lm_head.weight"]):
            raise ValueError(
                "state_dict: 'lm_head.weight' differs from 'tok_emb.weight' "
                "but the config ties them (tie_embeddings=True)"
            )
        model.load_state_dict(state_dict)
        return model


# ----------------------------------------------------------------------------- capture


@contextmanager
def capture(
    model: Decoder, what: str | tuple[str, ...] = CAPTURE_KINDS
) -> Iterator[dict[str, dict[int, torch.Tensor]]]:
    """Record activations of the forward passes run inside the ``with`` block.

    Yields ``acts`` with ``acts[kind][layer]`` (detached), for each kind in ``what`` (one name or
    several):

    * ``"residual"``: the residual stream leaving block ``layer``, (B, T, d_model);
    * ``"attn_probs"``: the attention probabilities of block ``layer``, (B, H, T_new, T_keys),
      computed explicitly (the naive route) while capturing, since SDPA does not return them.

    A later forward pass overwrites an earlier one's entries. Usage::

        with capture(model) as acts:
            model(ids)
        acts["attn_probs"][0]   # layer 0
    """
    if not isinstance(model, Decoder):
        raise TypeError(f"model: expected a Decoder, got {type(model).__name__}")
    what = (what,) if isinstance(what, str) else tuple(what)
    for kind in what:
        check_choice("what", kind, CAPTURE_KINDS)
    if "attn_probs" in what and model.config.mixer != "attention":
        raise ValueError(f"what: 'attn_probs' needs attention layers, but this model's mixer is {model.config.mixer!r}")
    acts: dict[str, dict[int, torch.Tensor]] = {kind: {} for kind in what}
    handles = []
    try:
        for layer, block in enumerate(model.blocks):
            if "residual" in what:
                def record(module: nn.Module, args: Any, out: torch.Tensor, layer: int = layer) -> None:
                    acts["residual"][layer] = out.detach()
                handles.append(block.register_forward_hook(record))
            if "attn_probs" in what:
                def sink(probs: torch.Tensor, layer: int = layer) -> None:
                    acts["attn_probs"][layer] = probs.detach()
                block.attn.probs_sink = sink
        yield acts
    finally:
        for handle in handles:
            handle.remove()
        for block in model.blocks:
            if isinstance(block.attn, CausalSelfAttention):
                block.attn.probs_sink = None
