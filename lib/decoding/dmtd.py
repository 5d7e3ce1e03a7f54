"""Direct Multi-Token Decoding: late layers emit the tokens between full passes (Luo et al., arXiv 2510.11958).

Split a decoder of L blocks into E = L − M early/middle blocks and M late blocks. Decoding runs in
cycles of τ tokens. A cycle starts at an *anchor* position a with one full pass: the early blocks
process the anchor token together with every token still *pending* (see below), and the late
blocks turn the anchor's middle-layer state into the next token. The τ − 1 tokens after it are
emitted by the late blocks alone: at an in-cycle position t the late blocks read the embedding of
token x_t (the token just emitted) and attend to the late-layer keys and values of every earlier
position, the anchors' among them. The early/middle keys and values of those in-cycle tokens are
missing; they stay *pending* and are computed in parallel in the next full pass (*cyclical
refilling*), before the next anchor needs them. No parameter is added and nothing is verified,
so the output differs from greedy decoding: the method is lossy and needs fine-tuning.

What the late blocks receive at position t (``first`` = the first position of the cycle pattern,
P − 1 for a prompt of P tokens, 0 in training)::

    anchor(t)  =  t < first  or  (t − first) mod τ = 0
    late_in[t] =  h_E[t]  if anchor(t)  else  E[x_t]          h_E = the stream after the early blocks

so the prediction at t uses the deep (early/middle) state of positions s ≤ a(t) only, where a(t)
is the last anchor at or before t: the *cyclical mask* ``C[t, s] = s ≤ a(t)``. For τ = 1 every
position is an anchor, C is the causal mask and DMTD is the plain model. Training runs exactly
this routing teacher-forced (every position at once, one ordinary forward's cost), so the
fine-tuning loss is the loss of the inference information flow.

Cost: a cycle is one full pass (L blocks, on τ tokens at once) plus τ − 1 passes through M blocks,
against τ full passes; when a pass costs what its blocks cost, whatever the number of tokens
(memory- or overhead-bound decoding), the speed-up is ``S = τ L / (L + (τ − 1) M)``.

Reconstruction note: the routing above follows the authors' public training code (its late
layers receive the early-layer stream at in-cycle positions and add the middle-layer state only
at every τ-th position; the released recipe uses no early "encoding" layers, so that stream is the
token embedding). At the anchors we pass h_E alone, not the code's h_enc + h_E, so that τ = 1 is
exactly the base model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.models.decoder import Decoder, KVCache
from lib.train import History, TrainConfig, evaluate_lm, train
from lib.validation import check_int_in_range, check_positive_int, check_tensor

__all__ = [
    "DMTDView",
    "anchors",
    "cyclical_mask",
    "dmtd_bits",
    "dmtd_forward",
    "dmtd_generate",
    "dmtd_generate_ref",
    "dmtd_loss",
    "dmtd_speedup",
    "finetune_dmtd",
    "new_dmtd_caches",
    "numpy_decoder",
    "pass_counts",
]


# ----------------------------------------------------------------------------- the schedule


def dmtd_speedup(L: int, M: int, tau: int) -> float:
    """Ideal DMTD speed-up ``τ L / (L + (τ − 1) M)`` when a pass costs what its blocks cost.

    L blocks in all, M of them late (1 ≤ M ≤ L), cycles of τ ≥ 1 tokens. E.g. L = 36, M = 8, τ = 4 → 2.4.
    """
    check_positive_int("L", L)
    check_int_in_range("M", M, 1, L)
    check_positive_int("tau", tau)
    return tau * L / (L + (tau - 1) * M)


def anchors(T: int, tau: int, first: int = 0) -> np.ndarray:
    """Which of T positions run the full stack, (T,) bools: ``t < first or (t − first) mod τ = 0``."""
    check_positive_int("T", T)
    check_positive_int("tau", tau)
    check_int_in_range("first", first, 0, T - 1)
    t = np.arange(T)
    return (t < first) | ((t - first) % tau == 0)


def cyclical_mask(T: int, tau: int, first: int = 0) -> np.ndarray:
    """The cyclical mask (T, T) bools: ``C[t, s]`` = the prediction at t may use the deep state of s.

    ``C[t, s] = s ≤ a(t)`` with a(t) the last anchor at or before t (:func:`anchors`). Lower
    triangular (causal); τ = 1 gives the causal mask ``s ≤ t``.
    """
    is_anchor = anchors(T, tau, first)
    mask = np.zeros((T, T), dtype=bool)
    for t in range(T):                          # loops on purpose: the readable definition
        a = t
        while not is_anchor[a]:
            a -= 1                              # back to this cycle's anchor
        mask[t, : a + 1] = True
    return mask


def pass_counts(n_new: int, tau: int) -> tuple[int, int]:
    """(full passes, late-only passes) DMTD spends on n_new tokens after the prompt's pass.

    The prompt's pass emits the first token; every τ-th later token costs a full pass.
    """
    check_positive_int("n_new", n_new)
    check_positive_int("tau", tau)
    full = 1 + (n_new - 1) // tau
    return full, n_new - full


# ----------------------------------------------------------------------------- NumPy reference (float64)


def numpy_decoder(model: Decoder) -> dict[str, np.ndarray]:
    """The weights of a pre-norm LayerNorm/GELU/RoPE :class:`Decoder` as float64 arrays, by state-dict name."""
    c = model.config
    if (c.positions, c.norm, c.prenorm, c.mlp, c.mixer) != ("rope", "layernorm", True, "gelu", "attention"):
        raise ValueError(
            "model: the NumPy reference covers pre-norm LayerNorm/GELU attention with RoPE (the zoo's char "
            f"decoders), got positions={c.positions!r}, norm={c.norm!r}, prenorm={c.prenorm}, mlp={c.mlp!r}"
        )
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _rope(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Rotate pairs (i, i + Dh/2) of x (H, T, Dh) by θ[t, i] = t · 10000^(−2i/Dh)."""
    half = x.shape[-1] // 2
    theta = positions[:, None] * 10000.0 ** (-np.arange(half) * 2.0 / x.shape[-1])
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * np.cos(theta) - b * np.sin(theta), a * np.sin(theta) + b * np.cos(theta)], -1)


def _block_np(p: dict[str, np.ndarray], layer: int, x: np.ndarray, n_heads: int) -> np.ndarray:
    """One pre-norm block on the whole prefix x (T, d), causal attention, no cache."""
    def w(name: str) -> np.ndarray:
        return p[f"blocks.{layer}.{name}"]

    T, d = x.shape
    h = _layer_norm(x, w("norm1.weight"), w("norm1.bias"))
    q, k, v = np.split(h @ w("attn.qkv.weight").T, 3, axis=-1)                    # (T, d) each
    q, k, v = (z.reshape(T, n_heads, d // n_heads).transpose(1, 0, 2) for z in (q, k, v))
    q, k = _rope(q, np.arange(T)), _rope(k, np.arange(T))
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(d // n_heads)                   # (H, T, T)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    x = x + (probs @ v).transpose(1, 0, 2).reshape(T, d) @ w("attn.out.weight").T
    h = _layer_norm(x, w("norm2.weight"), w("norm2.bias"))
    return x + _gelu(h @ w("mlp.up.weight").T) @ w("mlp.down.weight").T


def dmtd_generate_ref(
    model: Decoder, prompt: Sequence[int], n_new: int, tau: int, late_layers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy DMTD in float64 NumPy, without caches → (tokens (n_new,), logits (n_new, V)).

    Explicit bookkeeping: ``deep[s]`` holds the early-block output of position s once a full pass
    has computed it; in-cycle positions wait in ``pending`` until the next anchor refills them
    (here by rerunning the early blocks on the whole prefix — same values, no cache). ``late_in[s]``
    is what the late blocks read at s, fixed when s is decoded.
    """
    p, c = numpy_decoder(model), model.config
    L, E = c.n_layers, c.n_layers - late_layers
    check_int_in_range("late_layers", late_layers, 1, L)
    check_positive_int("tau", tau)
    check_positive_int("n_new", n_new)
    seq = [int(t) for t in prompt]
    emb, deep, pending, late_in, logits = p["tok_emb.weight"], {}, [], [], []

    def early(upto: int) -> None:               # a full pass: early blocks over positions 0 … upto
        h = emb[seq[: upto + 1]]
        for layer in range(E):
            h = _block_np(p, layer, h, c.n_heads)
        refill = [s for s in range(upto + 1) if s not in deep]     # the prompt, or pending + the anchor
        assert not deep or refill == [*pending, upto], (refill, pending)
        deep.update({s: h[s] for s in refill})
        pending.clear()

    for step in range(n_new):
        t = len(seq) - 1                        # the newest token's position
        is_anchor = step == 0 or step % tau == 0
        if is_anchor:
            early(t)                            # refills the pending in-cycle positions too
            late_in.extend(deep[s] for s in range(len(late_in), t + 1))   # the prompt, then the anchor
        else:
            pending.append(t)                   # its early/middle state is missing until the next anchor
            late_in.append(emb[seq[t]])
        h = np.stack(late_in)
        for layer in range(E, L):
            h = _block_np(p, layer, h, c.n_heads)
        row = _layer_norm(h[-1], p["norm_f.weight"], p["norm_f.bias"]) @ p["lm_head.weight"].T
        logits.append(row)
        seq.append(int(np.argmax(row)))
    return np.array(seq[-n_new:]), np.stack(logits)


# ----------------------------------------------------------------------------- torch: training flow


def _check_split(model: Decoder, tau: int, late_layers: int) -> None:
    if not isinstance(model, Decoder):
        raise TypeError(f"model: expected a lib.models.Decoder, got {type(model).__name__}")
    check_positive_int("tau", tau)
    check_int_in_range("late_layers", late_layers, 1, model.config.n_layers)


def dmtd_forward(model: Decoder, ids: torch.Tensor, tau: int, late_layers: int, first: int = 0) -> torch.Tensor:
    """Teacher-forced logits (B, T, V) of ids (B, T) under DMTD's information flow.

    ``late_in = where(anchor, h_E, E[x])`` (module docstring), then the late blocks and the head,
    all positions at once with ordinary causal attention: the cost of one plain forward.
    """
    _check_split(model, tau, late_layers)
    check_tensor("ids", ids)
    if ids.ndim != 2:
        raise ValueError(f"ids: expected shape (batch, tokens), got {tuple(ids.shape)}")
    split = model.config.n_layers - late_layers
    emb = model.embed(ids)
    deep = model.run_layers(emb, 0, split)
    is_anchor = torch.from_numpy(anchors(ids.shape[1], tau, first)).to(ids.device)[None, :, None]
    return model.head(model.run_layers(torch.where(is_anchor, deep, emb), split, model.config.n_layers))


def dmtd_loss(model: Decoder, x: torch.Tensor, y: torch.Tensor, tau: int, late_layers: int) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of targets y (B, T) under :func:`dmtd_forward` of x (B, T)."""
    logits = dmtd_forward(model, x, tau, late_layers)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class DMTDView(nn.Module):
    """A decoder seen through DMTD's flow: ``view(ids)`` = :func:`dmtd_forward` (for ``lib.train``).

    In training mode each call draws τ from ``taus`` (a seeded generator), so one fine-tune serves
    every cycle length; in eval mode τ = ``eval_tau``. The parameters are the decoder's own.
    """

    def __init__(self, decoder: Decoder, late_layers: int, taus: Sequence[int], eval_tau: int, seed: int = 0) -> None:
        super().__init__()
        for tau in (*taus, eval_tau):
            _check_split(decoder, tau, late_layers)
        self.decoder, self.late_layers, self.taus, self.eval_tau = decoder, late_layers, tuple(taus), eval_tau
        self.rng = np.random.default_rng(seed)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tau = int(self.rng.choice(self.taus)) if self.training else self.eval_tau
        return dmtd_forward(self.decoder, ids, tau, self.late_layers)


def dmtd_bits(model: Decoder, val_ids: np.ndarray, tau: int, late_layers: int, seq_len: int, batch_size: int = 32) -> float:
    """Validation bits per character under DMTD's flow (windows of seq_len, anchors at 0, τ, 2τ, …)."""
    view = DMTDView(model, late_layers, (tau,), tau)
    return evaluate_lm(view, val_ids, batch_size, seq_len) / math.log(2)


def finetune_dmtd(
    model: Decoder,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    late_layers: int,
    taus: Sequence[int],
    config: TrainConfig,
    evaluate: Callable[[nn.Module], float] | None = None,
) -> History:
    """Fine-tune ``model`` in place with the DMTD loss (τ drawn per batch from ``taus``) → the History."""
    view = DMTDView(model, late_layers, taus, max(taus), seed=config.seed)
    return train(view, batches, config, evaluate=evaluate)


# ----------------------------------------------------------------------------- torch: cached generation


def new_dmtd_caches(model: Decoder) -> tuple[KVCache, KVCache]:
    """(early, late): one cache for the early/middle blocks, one for the late blocks; their lengths differ."""
    return model.new_cache(1), model.new_cache(1)


def _full_pass(model: Decoder, ids: torch.Tensor, split: int, early: KVCache) -> torch.Tensor:
    """Early blocks on ids (1, n) — the pending tokens and the anchor — at the early cache's next positions."""
    h = model.run_layers(model.embed(ids, early.length), 0, split, early)
    early.advance(ids.shape[1])
    return h


def _late_pass(model: Decoder, h: torch.Tensor, split: int, late: KVCache) -> torch.Tensor:
    """Late blocks on h (1, n, d) and the head → the last row's logits (V,)."""
    h = model.run_layers(h, split, model.config.n_layers, late)
    late.advance(h.shape[1])
    return model.head(h[:, -1])[0]


@torch.no_grad()
def dmtd_generate(
    model: Decoder,
    prompt: torch.Tensor,
    n_new: int,
    tau: int,
    late_layers: int,
    *,
    caches: tuple[KVCache, KVCache] | None = None,
    logits_out: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Greedy DMTD → the n_new new tokens (n_new,) after ``prompt`` (P,).

    The prompt gets one full pass. Then the newest token either starts a cycle (every τ-th):
    one early-blocks call on [pending + newest], late blocks on the newest; or it is in-cycle: late
    blocks on its embedding, and it joins ``pending``. ``caches`` (from :func:`new_dmtd_caches`)
    lets a caller inspect them afterwards; each step's logits row is appended to ``logits_out``.
    """
    _check_split(model, tau, late_layers)
    check_tensor("prompt", prompt)
    if prompt.ndim != 1 or prompt.numel() == 0:
        raise ValueError(f"prompt: expected a non-empty 1-D tensor of token ids, got shape {tuple(prompt.shape)}")
    check_positive_int("n_new", n_new)
    if prompt.numel() + n_new > model.config.max_seq_len:
        raise ValueError(f"n_new: prompt {prompt.numel()} + {n_new} new tokens exceeds max_seq_len {model.config.max_seq_len}")
    split = model.config.n_layers - late_layers
    early, late = caches if caches is not None else new_dmtd_caches(model)
    h = _full_pass(model, prompt[None], split, early)
    out: list[torch.Tensor] = []
    for step in range(n_new):
        if step > 0 and step % tau:                              # in-cycle: late blocks only
            h = model.embed(out[-1].view(1, 1), late.length)
        elif step > 0:                                           # anchor: refill the pending tokens
            h = _full_pass(model, torch.stack(out[early.length - prompt.numel():])[None], split, early)[:, -1:]
        logits = _late_pass(model, h, split, late)
        if logits_out is not None:
            logits_out.append(logits)
        out.append(logits.argmax())
    return torch.stack(out)
