"""A tiny pre-norm encoder for the chapter's attention experiments, its data and its training loop.

Sections 01.4 (keys in place of queries) and 01.5 (doubly stochastic attention) change only the
attention inside each layer, so the encoder takes that part as an argument: ``mixer(d_model,
n_heads)`` builds one layer's token mixer, :class:`SelfAttention` by default::

    config = TinyEncoderConfig(n_inputs=4, n_tokens=16, n_outputs=10, inputs="features")
    (train, test) = load_digit_patches()
    model = TinyEncoder(config, mixer=lambda d, h: SelfAttention(d, h, normalize=my_normalizer))
    accuracy = train_classifier(model, train, test, steps=300, lr=3e-3, batch_size=64, seed=0)

What is here:

* :class:`SelfAttention` — multi-head attention x (B, N, d) → (B, N, d); softmax through
  :func:`lib.attention.flash_attention`, or any ``normalize`` mapping logits to weights.
* :class:`TinyEncoderConfig`, :class:`TinyEncoder` — embedding (tokens or features) + learned
  positions, pre-norm blocks (attention, GELU MLP), then a per-token or mean-pooled head.
* :func:`load_digit_patches` — sklearn's bundled 8×8 digits as 16 patch tokens (no network).
* :func:`sequence_task` — the synthetic sequence-to-sequence tasks (copy, reverse, sort, swap) in
  encoder form: one output symbol per input position.
* :func:`train_classifier`, :func:`seed_runs` — a run's test accuracy through :func:`lib.train.train`,
  and its mean ± std over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lib.attention.flash import flash_attention
from lib.data.tasks import IGNORE_INDEX, make_task
from lib.train import TrainConfig, train
from lib.validation import check_choice, check_int_in_range, check_positive_int, check_seed, check_tensor

__all__ = [
    "SeedSummary",
    "SelfAttention",
    "Split",
    "TinyEncoder",
    "TinyEncoderConfig",
    "accuracy",
    "load_digit_patches",
    "seed_runs",
    "sequence_task",
    "train_classifier",
]

Split = tuple[torch.Tensor, torch.Tensor]
"""``(inputs, labels)``: inputs (n, N) long or (n, N, F) float; labels (n,) or (n, N) long."""


def check_heads(d_model: int, n_heads: int) -> None:
    """Raise unless ``n_heads`` is a positive int dividing the positive int ``d_model``."""
    check_positive_int("d_model", d_model)
    check_positive_int("n_heads", n_heads)
    if d_model % n_heads:
        raise ValueError(f"n_heads: expected a divisor of d_model = {d_model}, got {n_heads}")


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, N, H·d_h) → (B, H, N, d_h)."""
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d_h) → (B, N, H·d_h)."""
    b, h, n, d_h = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d_h)


def check_sequence(name: str, x: torch.Tensor, d_model: int) -> None:
    """Raise unless ``x`` is a floating (B, N, d_model) tensor."""
    check_tensor(name, x)
    if x.ndim != 3 or x.shape[-1] != d_model or not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating (B, N, {d_model}) tensor, got {x.dtype} {tuple(x.shape)}")


class SelfAttention(nn.Module):
    """Multi-head self-attention: x (B, N, d_model) → (B, N, d_model), no mask (an encoder).

    Q, K, V = x W_Q, x W_K, x W_V (one fused Linear d → 3d), split into H heads of d_h = d/H;
    S = Q Kᵀ/√d_h (B, H, N, N); A = softmax(S) row by row, or ``normalize(S)`` when given
    (any map from logits (B, H, N, N) to weights of the same shape); out = merge(A V) W_O.
    Softmax runs through :func:`lib.attention.flash_attention` and never materializes A.
    """

    def __init__(
        self, d_model: int, n_heads: int, normalize: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        check_heads(d_model, n_heads)
        if normalize is not None and not callable(normalize):
            raise TypeError(f"normalize: expected None or a callable, got {type(normalize).__name__}")
        self.d_model, self.n_heads, self.normalize = d_model, n_heads, normalize
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sequence("x", x, self.d_model)
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        if self.normalize is None:
            o = flash_attention(q, k, v)
        else:
            logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            o = self.normalize(logits) @ v
        return self.out(merge_heads(o))


@dataclass(frozen=True)
class TinyEncoderConfig:
    """The encoder's sizes and its input and output kinds.

    ``n_inputs``: vocabulary size (``inputs="tokens"``, inputs (B, N) long) or feature size
    (``inputs="features"``, inputs (B, N, n_inputs) float). ``n_tokens``: the longest sequence
    (the size of the learned position table). ``n_outputs``: classes. ``per_token``: predict every
    position (sequence → sequence, logits (B, N, n_outputs)); otherwise mean-pool the tokens and
    classify the sequence (logits (B, n_outputs)). ``learned_positions``: add a learned (N, d)
    position table to the embeddings (False: the model sees a set, not a sequence).
    """

    n_inputs: int
    n_tokens: int
    n_outputs: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    inputs: str = "tokens"
    per_token: bool = False
    learned_positions: bool = True
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("n_inputs", "n_tokens", "n_outputs", "n_layers", "mlp_ratio"):
            check_positive_int(f"TinyEncoderConfig.{name}", getattr(self, name))
        check_heads(self.d_model, self.n_heads)
        check_choice("TinyEncoderConfig.inputs", self.inputs, ("tokens", "features"))
        for name in ("per_token", "learned_positions"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TinyEncoderConfig.{name}: expected a bool, got {getattr(self, name)!r}")


class Block(nn.Module):
    """Pre-norm block: x + mixer(LN(x)), then x + MLP(LN(x)) with a GELU MLP d → r·d → d."""

    def __init__(self, config: TinyEncoderConfig, mixer: Callable[[int, int], nn.Module]) -> None:
        super().__init__()
        d = config.d_model
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mixer = mixer(d, config.n_heads)
        if not isinstance(self.mixer, nn.Module):
            raise TypeError(f"mixer: expected a callable returning an nn.Module, got {type(self.mixer).__name__}")
        self.mlp = nn.Sequential(nn.Linear(d, config.mlp_ratio * d), nn.GELU(), nn.Linear(config.mlp_ratio * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyEncoder(nn.Module):
    """Embedding + positions → ``n_layers`` pre-norm blocks → LayerNorm → head.

    inputs (B, N) long tokens or (B, N, n_inputs) float features, N ≤ n_tokens  →  logits
    (B, N, n_outputs) when ``config.per_token``, else (B, n_outputs) from the mean over positions.
    ``mixer(d_model, n_heads)`` builds each layer's attention (default :class:`SelfAttention`).
    """

    def __init__(self, config: TinyEncoderConfig, mixer: Callable[[int, int], nn.Module] = SelfAttention) -> None:
        super().__init__()
        if not isinstance(config, TinyEncoderConfig):
            raise TypeError(f"config: expected a TinyEncoderConfig, got {type(config).__name__}")
        if not callable(mixer):
            raise TypeError(f"mixer: expected a callable (d_model, n_heads) -> nn.Module, got {type(mixer).__name__}")
        self.config = config
        d = config.d_model
        self.embed = nn.Embedding(config.n_inputs, d) if config.inputs == "tokens" else nn.Linear(config.n_inputs, d)
        self.positions = nn.Parameter(0.02 * torch.randn(config.n_tokens, d)) if config.learned_positions else None
        self.blocks = nn.ModuleList(Block(config, mixer) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.n_outputs)

    def _check_inputs(self, inputs: torch.Tensor) -> None:
        check_tensor("inputs", inputs)
        c = self.config
        if c.inputs == "tokens":
            ok = inputs.ndim == 2 and inputs.dtype == torch.long
            expected = f"a long (B, N) tensor of token ids in [0, {c.n_inputs})"
        else:
            ok = inputs.ndim == 3 and inputs.shape[-1] == c.n_inputs and inputs.is_floating_point()
            expected = f"a floating (B, N, {c.n_inputs}) tensor of features"
        if not ok or not 1 <= inputs.shape[1] <= c.n_tokens:
            got = f"{inputs.dtype} {tuple(inputs.shape)}"
            raise ValueError(f"inputs: expected {expected} with N ≤ {c.n_tokens}, got {got}")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self._check_inputs(inputs)
        x = self.embed(inputs)
        if self.positions is not None:
            x = x + self.positions[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x if self.config.per_token else x.mean(dim=1))


# ----------------------------------------------------------------------------- data


def load_digit_patches(patch: int = 2, test_fraction: float = 0.25, seed: int = 0) -> tuple[Split, Split]:
    """sklearn's bundled 8×8 digits (1797 images, 10 classes) as sequences of patch tokens.

    Each image (pixels 0..16, scaled to [0, 1]) is cut into (8/p)² non-overlapping p×p patches in
    row-major order, each flattened: inputs (n, (8/p)², p²) float32, labels (n,) long. A seeded
    shuffle puts ``round(test_fraction · n)`` images in the test split. Returns (train, test).
    """
    from sklearn.datasets import load_digits  # lazy: only this loader needs sklearn

    if patch not in (1, 2, 4, 8):
        raise ValueError(f"patch: expected a divisor of 8 (1, 2, 4 or 8), got {patch!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, float) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a float in (0, 1), got {test_fraction!r}")
    check_seed(seed)
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0                          # (n, 8, 8)
    g = 8 // patch
    patches = images.reshape(-1, g, patch, g, patch).transpose(0, 1, 3, 2, 4).reshape(-1, g * g, patch * patch)
    order = np.random.default_rng(seed).permutation(len(patches))
    n_test = round(test_fraction * len(patches))
    x, y = torch.from_numpy(patches[order].copy()), torch.from_numpy(digits.target[order].astype(np.int64))
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


SEQUENCE_TASKS = ("copy", "reverse", "sort", "swap")
"""The paper's synthetic sequence tasks, in encoder form (see :func:`sequence_task`)."""


def _swap_halves(source: np.ndarray) -> np.ndarray:
    """(n, L) → (n, L): the second half, then the first (the middle symbol stays when L is odd)."""
    half = source.shape[1] // 2
    return np.concatenate([source[:, -half:], source[:, half:-half], source[:, :half]], axis=1)


def sequence_task(name: str, n: int, *, seed: int, length: int = 16, num_symbols: int = 10) -> Split:
    """``n`` examples of a sequence-to-sequence task with one output symbol per input position.

    inputs (n, length) long: symbols drawn uniformly from ``0..num_symbols-1``; labels (n, length)
    long: ``copy`` the same string, ``reverse`` it backwards, ``sort`` it ascending (repeats kept),
    ``swap`` its two halves exchanged. copy/reverse/sort reuse :func:`lib.data.tasks.make_task`
    (prompt = inputs, answer = labels); swap draws its source the same way.
    """
    check_choice("name", name, SEQUENCE_TASKS)
    check_positive_int("n", n)
    check_int_in_range("length", length, 2, 4096)
    if name == "swap":
        source = make_task("copy", n, seed=seed, length=length, num_symbols=num_symbols).sequences[:, :length]
        return source.contiguous(), torch.from_numpy(_swap_halves(source.numpy()))
    sequences = make_task(name, n, seed=seed, length=length, num_symbols=num_symbols).sequences
    return sequences[:, :length].contiguous(), sequences[:, length + 1 :].contiguous()


# ----------------------------------------------------------------------------- training


def _check_split(name: str, split: Split) -> None:
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise TypeError(f"{name}: expected a pair (inputs, labels) of tensors, got {type(split).__name__}")
    inputs, labels = split
    check_tensor(f"{name}[0]", inputs)
    check_tensor(f"{name}[1]", labels)
    if labels.dtype != torch.long or len(labels) != len(inputs) or len(inputs) == 0:
        raise ValueError(
            f"{name}: expected long labels with one row per input, got inputs {tuple(inputs.shape)}, "
            f"labels {labels.dtype} {tuple(labels.shape)}"
        )


def _batches(split: Split, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless seeded mini-batches drawn without replacement within each pass over the split."""
    inputs, labels = split
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = order[start : start + batch_size]
            yield inputs[rows], labels[rows]


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int = 512) -> float:
    """Fraction of labels (≠ ``IGNORE_INDEX``) whose argmax logit is right: per sequence or per token."""
    _check_split("split", split)
    was_training = model.training
    model.eval()
    right = total = 0
    for start in range(0, len(split[0]), batch_size):
        labels = split[1][start : start + batch_size]
        predicted = model(split[0][start : start + batch_size]).argmax(dim=-1)
        counted = labels != IGNORE_INDEX
        right += int((predicted == labels)[counted].sum())
        total += int(counted.sum())
    model.train(was_training)
    return right / total


def train_classifier(
    model: nn.Module, train_split: Split, test_split: Split, *, steps: int, lr: float, batch_size: int, seed: int
) -> float:
    """Train ``model`` with :func:`lib.train.train` (AdamW, 10 % warm-up, cosine) on cross-entropy; return the
    test accuracy (per token when the model predicts every position).

    The batches are drawn from ``train_split`` with ``seed``; the model's own initialization is
    the caller's (seed before building it, e.g. with :func:`lib.seed_everything`). Training runs on
    one thread (restored afterwards): at these sizes every op is too small to gain from a second.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    _check_split("train", train_split)
    _check_split("test", test_split)
    check_positive_int("batch_size", batch_size)
    if batch_size > len(train_split[0]):
        raise ValueError(f"batch_size: expected at most the {len(train_split[0])} training examples, got {batch_size}")
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=steps // 10, weight_decay=0.01, seed=seed, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small run faster on one thread than split across two
    try:
        train(model, _batches(train_split, batch_size, seed), config)
    finally:
        torch.set_num_threads(threads)
    return accuracy(model, test_split)


@dataclass(frozen=True)
class SeedSummary:
    """A metric over seeds: ``values`` per seed, their ``mean`` and sample ``std`` (ddof = 1; 0 for one seed)."""

    mean: float
    std: float
    values: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f}"


def seed_runs(fn: Callable[[int], float], seeds: Iterable[int]) -> SeedSummary:
    """Call ``fn(seed)`` for every seed and summarize the floats it returns."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable seed -> float, got {type(fn).__name__}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: expected at least one seed, got none")
    values = tuple(float(fn(seed)) for seed in seeds)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return SeedSummary(mean=float(np.mean(values)), std=std, values=values)
