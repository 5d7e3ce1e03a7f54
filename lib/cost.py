"""What a forward pass of :class:`lib.models.decoder.Decoder` costs, counted on paper.

FLOPs count the matrix products only: a product of an (m × k) by a (k × n) matrix costs
``2·m·n·k`` (one multiply and one add per term). Norms, softmax, activations, RoPE and residual
additions are O(T·d) each and left out; they are a few percent at these sizes. For a pass over
``t`` new tokens of a batch of B, with ``L`` tokens already in the KV cache (prefill: L = 0;
decoding one token: t = 1), each layer costs::

    qkv projection      2 · B·t · d · 3d
    scores q kᵀ         2 · B·t · (L + t) · d        (all H heads: H · Dh = d)
    weighted sum A v    2 · B·t · (L + t) · d
    output projection   2 · B·t · d · d
    MLP                 2 · B·t · d · ff · (2 for GELU, 3 for SwiGLU)

and the LM head adds ``2 · B·t · d · V`` once. The attention terms count the dense (t × (L + t))
score block that the naive and SDPA routes compute, masked entries included; ``skip_masked=True``
counts only the ``t·L + t(t+1)/2`` visible ones, what a causal kernel that skips masked tiles does.

Memory: parameters, the KV cache ``2 · n_layers · B · L · d · bytes`` and the least traffic a pass
needs (:func:`forward_bytes`). :func:`roofline` turns FLOPs and bytes into the time a machine with
a given peak compute and bandwidth cannot beat, and says which of the two limits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lib.models.decoder import DecoderConfig
from lib.validation import check_positive_int

__all__ = [
    "BF16_BYTES",
    "H200_BF16_DENSE_FLOPS",
    "H200_HBM_BANDWIDTH",
    "ForwardFlops",
    "Roofline",
    "arithmetic_intensity",
    "decode_flops",
    "forward_bytes",
    "forward_flops",
    "kv_cache_bytes",
    "parameter_bytes",
    "parameter_count",
    "prefill_flops",
    "roofline",
]

H200_BF16_DENSE_FLOPS = 989e12  # FLOP/s, dense bf16 tensor cores (NVIDIA H200 SXM datasheet)
H200_HBM_BANDWIDTH = 4.8e12  # bytes/s, HBM3e
BF16_BYTES = 2  # the default element size below: weights and cache held in bf16


def _check_config(config: Any, *, attention_only: bool = True) -> None:
    if not isinstance(config, DecoderConfig):
        raise TypeError(f"config: expected a DecoderConfig, got {type(config).__name__}")
    if attention_only and config.mixer != "attention":
        raise ValueError(f"config: expected an attention decoder (mixer='attention'); this cost model does not "
                         f"cover mixer={config.mixer!r} (section 01.6)")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected an int ≥ 0, got {value!r}")


# ----------------------------------------------------------------------------- parameters


def parameter_count(config: DecoderConfig) -> int:
    """Parameters of ``Decoder(config)``, a tied embedding counted once::

        V·d                               token embedding (also the LM head when tied)
        + T_max·d                         learned positions only
        + n_layers · (4d² + m·d·ff + 2n)  attention W_qkv and W_o, MLP (m = 3 SwiGLU, else 2), two norms
        + n                               final norm (pre-norm only)
        + V·d                             untied LM head only

    where a norm holds n = 2d parameters (LayerNorm: γ, β) or n = d (RMSNorm: γ). The causal
    activation of section 01.6 has no parameters: ``mixer="causal_act"`` drops the 4d² term.
    """
    _check_config(config, attention_only=False)
    d, ff = config.d_model, config.ffn_dim
    norm = 2 * d if config.norm == "layernorm" else d
    mlp_matrices = 3 if config.mlp == "swiglu" else 2
    attention = 4 * d * d if config.mixer == "attention" else 0
    layer = attention + mlp_matrices * d * ff + 2 * norm
    total = config.vocab_size * d + config.n_layers * layer
    total += config.max_seq_len * d if config.positions == "learned" else 0
    total += norm if config.prenorm else 0
    total += 0 if config.tie_embeddings else config.vocab_size * d
    return total


def parameter_bytes(config: DecoderConfig, bytes_per_element: int = BF16_BYTES) -> int:
    """Memory of the weights: ``parameter_count · bytes_per_element``."""
    check_positive_int("bytes_per_element", bytes_per_element)
    return parameter_count(config) * bytes_per_element


def kv_cache_bytes(
    config: DecoderConfig, batch: int, length: int, bytes_per_element: int = BF16_BYTES
) -> int:
    """Memory of the keys and values of ``length`` positions: ``2 · n_layers · B · L · d_model · bytes``."""
    _check_config(config)
    check_positive_int("batch", batch)
    _check_count("length", length)
    check_positive_int("bytes_per_element", bytes_per_element)
    return 2 * config.n_layers * batch * length * config.d_model * bytes_per_element


# ----------------------------------------------------------------------------- FLOPs


@dataclass(frozen=True)
class ForwardFlops:
    """Matmul FLOPs of one forward pass: the five per-layer terms, the layer count and the LM head."""

    qkv: int
    scores: int
    weighted_sum: int
    out_proj: int
    mlp: int
    n_layers: int
    lm_head: int

    @property
    def attention(self) -> int:
        """The two terms that grow with the context: ``scores + weighted_sum`` (one layer)."""
        return self.scores + self.weighted_sum

    @property
    def per_layer(self) -> int:
        """One layer: ``qkv + scores + weighted_sum + out_proj + mlp``."""
        return self.qkv + self.attention + self.out_proj + self.mlp

    @property
    def total(self) -> int:
        """The whole pass: ``n_layers · per_layer + lm_head``."""
        return self.n_layers * self.per_layer + self.lm_head


def forward_flops(
    config: DecoderConfig, tokens: int, *, cached: int = 0, batch: int = 1, skip_masked: bool = False
) -> ForwardFlops:
    """FLOPs of ``Decoder.forward`` on ``tokens`` new tokens with ``cached`` positions in the KV cache.

    The per-layer terms and the LM head are in the module docstring; ``skip_masked`` counts only
    the score entries a causal mask leaves visible.
    """
    _check_config(config)
    check_positive_int("tokens", tokens)
    _check_count("cached", cached)
    check_positive_int("batch", batch)
    d, rows = config.d_model, batch * tokens
    if skip_masked:
        visible = tokens * cached + tokens * (tokens + 1) // 2  # query i sees cached + i + 1 keys
    else:
        visible = tokens * (cached + tokens)
    mlp_matrices = 3 if config.mlp == "swiglu" else 2
    return ForwardFlops(
        qkv=2 * rows * d * 3 * d,
        scores=2 * batch * visible * d,
        weighted_sum=2 * batch * visible * d,
        out_proj=2 * rows * d * d,
        mlp=2 * rows * d * config.ffn_dim * mlp_matrices,
        n_layers=config.n_layers,
        lm_head=2 * rows * d * config.vocab_size,
    )


def prefill_flops(config: DecoderConfig, tokens: int, *, batch: int = 1, skip_masked: bool = False) -> ForwardFlops:
    """A prompt of ``tokens`` tokens run in one pass from an empty cache (also: recomputing a prefix)."""
    return forward_flops(config, tokens, cached=0, batch=batch, skip_masked=skip_masked)


def decode_flops(config: DecoderConfig, context: int, *, batch: int = 1) -> ForwardFlops:
    """One new token with ``context`` tokens already cached: it attends to ``context + 1`` keys."""
    return forward_flops(config, 1, cached=context, batch=batch)


def forward_bytes(
    config: DecoderConfig, tokens: int, *, cached: int = 0, batch: int = 1, bytes_per_element: int = BF16_BYTES
) -> int:
    """The least memory traffic of a forward pass, in bytes::

        parameter_bytes                        every weight read once
        + kv_cache_bytes(B, cached)            the cache read once
        + kv_cache_bytes(B, tokens)            the new keys and values written
        + B · tokens · V · bytes               the logits written

    Activations are assumed to stay on chip (a perfectly fused pass). For one decoded token the
    weights dominate until the cache outgrows them, which is why decoding is memory-bound.
    """
    check_positive_int("tokens", tokens)
    return (
        parameter_bytes(config, bytes_per_element)
        + kv_cache_bytes(config, batch, cached, bytes_per_element)
        + kv_cache_bytes(config, batch, tokens, bytes_per_element)
        + batch * tokens * config.vocab_size * bytes_per_element
    )


# ----------------------------------------------------------------------------- roofline


def arithmetic_intensity(flops: float, bytes_moved: float) -> float:
    """FLOPs per byte of memory traffic: ``flops / bytes_moved``."""
    if not flops >= 0:
        raise ValueError(f"flops: expected a number ≥ 0, got {flops!r}")
    if not bytes_moved > 0:
        raise ValueError(f"bytes_moved: expected a number > 0, got {bytes_moved!r}")
    return flops / bytes_moved


@dataclass(frozen=True)
class Roofline:
    """Where a computation sits under a machine's roofline (Williams et al., 2009).

    ``time_s = max(compute_s, memory_s)`` with ``compute_s = flops / peak_flops`` and
    ``memory_s = bytes / peak_bandwidth``: the least time the machine needs. ``bound`` is
    "compute" when intensity ≥ ridge = peak_flops / peak_bandwidth, else "memory".
    """

    intensity: float
    ridge: float
    compute_s: float
    memory_s: float
    time_s: float
    attainable_flops: float
    bound: str


def roofline(
    flops: float,
    bytes_moved: float,
    peak_flops: float = H200_BF16_DENSE_FLOPS,
    peak_bandwidth: float = H200_HBM_BANDWIDTH,
) -> Roofline:
    """The attainable time of ``flops`` FLOPs moving ``bytes_moved`` bytes, and what limits it.

    ``attainable_flops = min(peak_flops, intensity · peak_bandwidth)`` is the FLOP rate the
    computation can reach at best. Defaults: the H200 (dense bf16, HBM3e).
    """
    intensity = arithmetic_intensity(flops, bytes_moved)
    for name, value in (("peak_flops", peak_flops), ("peak_bandwidth", peak_bandwidth)):
        if not value > 0:
            raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    ridge = peak_flops / peak_bandwidth
    compute_s, memory_s = flops / peak_flops, bytes_moved / peak_bandwidth
    return Roofline(
        intensity=intensity,
        ridge=ridge,
        compute_s=compute_s,
        memory_s=memory_s,
        time_s=max(compute_s, memory_s),
        attainable_flops=min(peak_flops, intensity * peak_bandwidth),
        bound="compute" if intensity >= ridge else "memory",
    )
