"""A tiny transformer encoder–decoder for speech-like input, with a CTC head (section 07.5).

Frames x (B, S, F) become text. The encoder reads all frames at once (no mask but padding), the
decoder writes one character after another and looks at the frames through cross-attention::

    h⁰ = x W_in + P[s]                                   P: sinusoidal positions
    encoder layer:  h = h + SelfAttn(N(h), pad mask);   h = h + MLP(N(h))
    m = N_enc(h)                                         the memory (B, S, d)

    z⁰ = E[y_t] + P[t]
    decoder layer:  z = z + CausalSelfAttn(N(z));  z = z + CrossAttn(N(z), m);  z = z + MLP(N(z))
    logits = N_dec(z) Eᵀ                                 (B, T, V), tied embedding

    CTC head:       log p_ctc(· | frame s) = log_softmax(m_s W_ctc + b)          (B, S, V)

Decoding state (:class:`DecoderState`): the cross-attention keys and values ``m W_k``, ``m W_v``
are computed **once per utterance** (they never change while the text grows), and the causal
self-attention keeps a :class:`lib.models.decoder.KVCache` whose ``truncate`` rolls back in O(1).
One :meth:`Seq2Seq.decode` call scores k new tokens against the cache (teacher forcing), which
is what verification needs.

Training (:func:`train_asr`, the zoo's recipe): first the encoder–decoder on cross-entropy
through :func:`lib.train.train`; then, with the encoder **frozen**, only the CTC head on
``torch.nn.CTCLoss`` — the paper's recipe of fine-tuning nothing but the added fast decoder. The
MLP, the norms, the positions and the cache are :mod:`lib.models.decoder`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.data.acoustics import AcousticSplit, Vocab, acoustic_split, pad_frames
from lib.data.tokenizers import CharTokenizer
from lib.models.decoder import MLP, DecoderConfig, KVCache, causal_mask, make_norm, sinusoidal_table
from lib.train import History, TrainConfig, lr_at, parameter_groups, train
from lib.validation import check_dtype, check_positive_int, check_tensor

__all__ = [
    "Attention",
    "DecoderState",
    "Memory",
    "Seq2Seq",
    "Seq2SeqConfig",
    "asr_validation_loss",
    "teacher_forced_batch",
    "teacher_forced_loss",
    "train_asr",
    "train_ctc_head",
    "train_seq2seq",
]

IGNORE = -100


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Sizes of a :class:`Seq2Seq`. ``vocab_size`` counts characters + blank + eos (see :class:`Vocab`).

    ``token_stride``: the decoder's token t gets the sinusoidal position of frame ``stride · t``, so
    that position alone points cross-attention at the right region when a token lasts about
    ``stride`` frames (the synthetic acoustics average 2); content refines it.
    """

    vocab_size: int
    n_features: int = 16
    d_model: int = 96
    n_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 2
    d_ff: int = 192
    max_frames: int = 192
    max_tokens: int = 64
    token_stride: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            check_positive_int(f.name, getattr(self, f.name))
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size: expected ≥ 3 (a character, blank and eos), got {self.vocab_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: expected a multiple of n_heads={self.n_heads}, got {self.d_model}")

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.vocab_size - 2)

    def layer_config(self, n_layers: int) -> DecoderConfig:
        """The :class:`DecoderConfig` whose MLP and norms the layers reuse (GELU, LayerNorm)."""
        return DecoderConfig(
            vocab_size=self.vocab_size, d_model=self.d_model, n_heads=self.n_heads, n_layers=n_layers,
            max_seq_len=self.max_tokens, positions="sinusoidal", d_ff=self.d_ff,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Seq2SeqConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"d: unknown Seq2SeqConfig field(s) {unknown}")
        return cls(**d)


# ----------------------------------------------------------------------------- layers


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, d) → (B, H, T, d/H)."""
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention of queries from x (B, Tq, d) over keys/values (B, H, Tk, Dh).

    ``softmax(q kᵀ/√Dh + mask) v``; ``mask`` is a bool tensor broadcasting to (B, H, Tq, Tk),
    True where a key may be seen. The keys and values come from :meth:`keys_values` so that the
    decoder can compute those of the memory once and reuse them.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """source (B, Tk, d) → keys, values (B, H, Tk, Dh)."""
        k, v = self.kv(source).chunk(2, dim=-1)
        return split_heads(k, self.n_heads), split_heads(v, self.n_heads)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q = split_heads(self.q(x), self.n_heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).flatten(2))


class EncoderLayer(nn.Module):
    """Pre-norm: ``h + SelfAttn(N(h))`` over the unpadded frames, then ``h + MLP(N(h))``."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1, self.norm2 = make_norm("layernorm", d), make_norm("layernorm", d)
        self.attn = Attention(d, config.n_heads)
        self.mlp = MLP(config.layer_config(config.enc_layers))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(h)
        h = h + self.attn(x, *self.attn.keys_values(x), mask)
        return h + self.mlp(self.norm2(h))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention (cached), cross-attention to the memory, MLP."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1, self.norm2, self.norm3 = (make_norm("layernorm", d) for _ in range(3))
        self.self_attn, self.cross_attn = Attention(d, config.n_heads), Attention(d, config.n_heads)
        self.mlp = MLP(config.layer_config(config.dec_layers))

    def forward(self, z: torch.Tensor, layer: int, state: DecoderState) -> torch.Tensor:
        x = self.norm1(z)
        k, v = self.self_attn.keys_values(x)
        if state.cache is not None:
            k, v = state.cache.write(layer, k, v)
        causal = causal_mask(z.shape[1], k.shape[2], z.device)            # new tokens see the cache and their past
        z = z + self.self_attn(x, k, v, causal)
        z = z + self.cross_attn(self.norm2(z), *state.cross[layer], state.memory_mask)
        return z + self.mlp(self.norm3(z))


# ----------------------------------------------------------------------------- the model


@dataclass
class Memory:
    """The encoder's output: ``states`` (B, S, d) and ``mask`` (B, 1, 1, S), True on real frames (None: no padding)."""

    states: torch.Tensor
    mask: torch.Tensor | None


@dataclass
class DecoderState:
    """What the decoder keeps for one batch of utterances.

    ``cross[ℓ]``: layer ℓ's cross-attention keys and values of the memory, (B, H, S, Dh) each,
    computed once; ``memory_mask`` as in :class:`Memory`; ``cache``: the self-attention
    :class:`KVCache` of the tokens fed so far (None while training: the whole text in one call).
    """

    cross: list[tuple[torch.Tensor, torch.Tensor]]
    memory_mask: torch.Tensor | None
    cache: KVCache | None

    @property
    def length(self) -> int:
        """Tokens already in the cache (0 without one)."""
        return self.cache.length if self.cache is not None else 0


class Seq2Seq(nn.Module):
    """The encoder–decoder of the module docstring, plus its CTC head."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config: expected a Seq2SeqConfig, got {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.frame_in = nn.Linear(config.n_features, d)
        self.register_buffer("frame_pos", sinusoidal_table(config.max_frames, d), persistent=False)
        stride = config.token_stride  # token t sits at "frame" stride·t: see Seq2SeqConfig
        self.register_buffer("token_pos", sinusoidal_table(config.max_tokens * stride, d)[::stride], persistent=False)
        self.encoder = nn.ModuleList(EncoderLayer(config) for _ in range(config.enc_layers))
        self.enc_norm = make_norm("layernorm", d)
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.decoder = nn.ModuleList(DecoderLayer(config) for _ in range(config.dec_layers))
        self.dec_norm = make_norm("layernorm", d)
        self.ctc_head = nn.Linear(d, config.vocab_size)
        nn.init.normal_(self.tok_emb.weight, std=0.02)

    # -- encoder and CTC head

    def encode(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> Memory:
        """frames (B, S, F) float, lengths (B,) of the unpadded frames (None: all S) → :class:`Memory`."""
        check_tensor("frames", frames)
        c = self.config
        if frames.ndim != 3 or frames.shape[-1] != c.n_features or not frames.is_floating_point():
            raise ValueError(f"frames: expected a float (B, S, {c.n_features}) tensor, got {frames.dtype} {tuple(frames.shape)}")
        if not 1 <= frames.shape[1] <= c.max_frames:
            raise ValueError(f"frames: expected 1 ≤ S ≤ max_frames = {c.max_frames} frames, got {frames.shape[1]}")
        mask = None
        if lengths is not None:
            check_tensor("lengths", lengths)
            if lengths.shape != (frames.shape[0],) or int(lengths.min()) < 1 or int(lengths.max()) > frames.shape[1]:
                raise ValueError(f"lengths: expected (B,) = ({frames.shape[0]},) ints in [1, {frames.shape[1]}], got {lengths.tolist()}")
            mask = (torch.arange(frames.shape[1]) < lengths[:, None])[:, None, None, :]
        h = self.frame_in(frames) + self.frame_pos[: frames.shape[1]]
        for layer in self.encoder:
            h = layer(h, mask)
        return Memory(self.enc_norm(h), mask)

    def ctc_log_probs(self, memory: Memory) -> torch.Tensor:
        """The CTC head: log-probabilities per frame, (B, S, V); the blank is ``config.vocab.blank``."""
        return F.log_softmax(self.ctc_head(memory.states), dim=-1)

    # -- decoder

    def start(self, memory: Memory, *, cached: bool = True) -> DecoderState:
        """The decoder's state for ``memory``: cross-attention keys/values once, an empty KVCache."""
        cross = [layer.cross_attn.keys_values(memory.states) for layer in self.decoder]
        cache = None
        if cached:
            b, c = memory.states.shape[0], self.config
            shape = (b, c.n_heads, c.max_tokens, c.d_model // c.n_heads)
            like = memory.states
            cache = KVCache([like.new_zeros(shape) for _ in self.decoder], [like.new_zeros(shape) for _ in self.decoder])
        return DecoderState(cross, memory.mask, cache)

    def decode(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Logits (B, k, V) for k new tokens (B, k) after the ``state.length`` cached ones.

        Row i scores the token after ``tokens[:, : i + 1]``; the cache (if any) grows by k.
        """
        check_tensor("tokens", tokens)
        check_dtype("tokens", tokens, (torch.long,))
        c = self.config
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise ValueError(f"tokens: expected a (B, k ≥ 1) tensor, got shape {tuple(tokens.shape)}")
        if int(tokens.min()) < 0 or int(tokens.max()) >= c.vocab_size:
            raise ValueError(f"tokens: expected ids in [0, {c.vocab_size}), got values in [{int(tokens.min())}, {int(tokens.max())}]")
        start = state.length
        if start + tokens.shape[1] > c.max_tokens:
            raise ValueError(f"tokens: {start} cached + {tokens.shape[1]} new exceeds max_tokens = {c.max_tokens}")
        z = self.tok_emb(tokens) + self.token_pos[start : start + tokens.shape[1]]
        for i, layer in enumerate(self.decoder):
            z = layer(z, i, state)
        if state.cache is not None:
            state.cache.advance(tokens.shape[1])
        return self.dec_norm(z) @ self.tok_emb.weight.T

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) of the whole text ``tokens`` (B, T) (training; no cache)."""
        return self.decode(tokens, self.start(self.encode(frames, lengths), cached=False))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_state(cls, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> Seq2Seq:
        """A model of ``config`` (a dict) carrying ``state_dict`` (any float dtype; loaded as float32).

        ``load_state_dict`` is strict: a missing, unexpected or misshapen tensor is an error naming it.
        """
        model = cls(Seq2SeqConfig.from_dict(config))
        model.load_state_dict({k: v.float() for k, v in state_dict.items()})
        return model


# ----------------------------------------------------------------------------- training


def teacher_forced_batch(
    split: AcousticSplit, rows: list[int], vocab: Vocab
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """((frames, lengths, inputs), targets): inputs ``[eos, y₁ … y_L]``, targets ``[y₁ … y_L, eos]``.

    Texts are padded with eos in the inputs and with -100 (ignored by the loss) in the targets.
    """
    frames, lengths = pad_frames([split.frames[r] for r in rows])
    longest = max(len(split.texts[r]) for r in rows) + 1
    inputs = torch.full((len(rows), longest), vocab.eos)
    targets = torch.full((len(rows), longest), IGNORE)
    for i, r in enumerate(rows):
        text = split.texts[r]
        inputs[i, 1 : len(text) + 1] = text
        targets[i, : len(text)] = text
        targets[i, len(text)] = vocab.eos
    return (frames, lengths, inputs), targets


def _batches(split: AcousticSplit, vocab: Vocab, batch_size: int, seed: int) -> Iterator[tuple[Any, torch.Tensor]]:
    """Endless seeded batches, drawn without replacement within each pass over the split."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(split), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield teacher_forced_batch(split, order[start : start + batch_size], vocab)


class _TeacherForced(nn.Module):
    """Adapts :meth:`Seq2Seq.forward` to :func:`lib.train.train`, which calls ``model(x)``."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.model(*batch)


def train_seq2seq(
    model: Seq2Seq, split: AcousticSplit, *, steps: int, batch_size: int, lr: float, warmup_steps: int,
    weight_decay: float, seed: int,
) -> History:
    """Train encoder and decoder on next-character cross-entropy (:func:`lib.train.train`): warm-up,
    cosine decay, AdamW; the CTC head is not touched."""
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay, seed=seed,
                         progress=False)
    return train(_TeacherForced(model), _batches(split, model.config.vocab, batch_size, seed), config)


CTC_LR = 1e-2
"""Peak learning rate of the CTC head (a single linear layer tolerates a large one)."""


def train_asr(
    config: Seq2SeqConfig, split: AcousticSplit, *, steps: int, batch_size: int, lr: float, warmup_steps: int,
    weight_decay: float, seed: int,
) -> tuple[Seq2Seq, History]:
    """The zoo's recipe: ``steps`` encoder–decoder steps on cross-entropy (:func:`train_seq2seq`),
    then the fast decoder: ``max(1, steps // 3)`` steps of the CTC head alone on the **frozen**
    encoder. The weights end rounded to fp16, the precision the checkpoint keeps.

    Training runs on one thread (restored afterwards): ops this small gain nothing from a second,
    and one thread gives the same numbers whatever the machine's core count.
    """
    torch.manual_seed(seed)
    model = Seq2Seq(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = train_seq2seq(model, split, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                                weight_decay=weight_decay, seed=seed)
        train_ctc_head(model, split, steps=max(1, steps // 3), batch_size=batch_size, lr=CTC_LR, seed=seed)
    finally:
        torch.set_num_threads(threads)
    for p in model.parameters():
        p.data = p.data.half().float()
    return model.eval(), history


def _ctc_loss(model: Seq2Seq, split: AcousticSplit, rows: list[int]) -> torch.Tensor:
    """CTC loss of the head on ``rows`` (per utterance divided by its length, then averaged: nats per
    character); the encoder runs without gradients."""
    frames, lengths = pad_frames([split.frames[r] for r in rows])
    with torch.no_grad():
        memory = model.encode(frames, lengths)
    log_probs = model.ctc_log_probs(memory)                                   # (B, S, V)
    texts = [split.texts[r] for r in rows]
    return F.ctc_loss(
        log_probs.transpose(0, 1), torch.cat(texts), lengths, torch.tensor([len(t) for t in texts]),
        blank=model.config.vocab.blank, zero_infinity=True,
    )


def train_ctc_head(model: Seq2Seq, split: AcousticSplit, *, steps: int, batch_size: int, lr: float, seed: int) -> list[float]:
    """Train only the CTC head, on the frozen encoder, with ``F.ctc_loss``; → the losses.

    AdamW with :func:`lib.train.lr_at`'s warm-up + cosine schedule (:func:`lib.train.train` cannot
    do this: its loss is cross-entropy). ``zero_infinity`` would drop an utterance whose frames
    are too few for its text (a doubled letter needs a blank between its two runs).
    """
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 10), weight_decay=0.0, seed=seed)
    optimizer = torch.optim.AdamW(parameter_groups(model.ctc_head, 0.0), lr=lr)
    generator, losses = torch.Generator().manual_seed(seed), []
    model.eval()
    for step in range(steps):
        rows = torch.randperm(len(split), generator=generator)[:batch_size].tolist()
        loss = _ctc_loss(model, split, rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def teacher_forced_loss(model: Seq2Seq, split: AcousticSplit, batch_size: int = 64) -> float:
    """Mean next-character cross-entropy of the decoder over ``split`` (every character and eos), in nats."""
    total, count = 0.0, 0
    for start in range(0, len(split), batch_size):
        (frames, lengths, inputs), targets = teacher_forced_batch(
            split, list(range(start, min(start + batch_size, len(split)))), model.config.vocab
        )
        logits = model(frames, lengths, inputs)
        total += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        count += int((targets != IGNORE).sum())
    return total / count


def asr_validation_loss(model: Seq2Seq, val_ids: np.ndarray, tokenizer: CharTokenizer) -> float:
    """The zoo's figure: :func:`teacher_forced_loss` on the held-out utterances of ``val_ids`` (seed 0)."""
    return teacher_forced_loss(model, acoustic_split(val_ids, tokenizer, "held_out"))
