"""The book's one training loop: AdamW, warm-up + cosine schedule, clipping, evaluation, a history.

Every model the book trains — the zoo's checkpoints, the small experiments inside a notebook —
goes through :func:`train`, so a reader learns one loop and can trust it everywhere::

    history = train(model, random_batches(train_ids, 32, 128, seed=0),
                    TrainConfig(steps=500, lr=3e-3, warmup_steps=50),
                    evaluate=lambda m: evaluate_lm(m, val_ids, 32, 128))
    history.plot()

What one step does (``model(x)`` returns logits ``(B, T, V)``, ``y`` is ``x`` shifted by one):

1. ``loss = cross_entropy(model(x), y)`` averaged over the ``B·T`` tokens, in nats;
2. ``loss.backward()``; the global gradient norm ``‖g‖₂`` over all parameters is recorded *before*
   clipping, then gradients are rescaled so that ``‖g‖₂ ≤ grad_clip``;
3. the learning rate of this step is set from :func:`lr_at` and AdamW takes one step.

Weight decay applies to the weight matrices of linear layers only. Biases, the gains and shifts of
normalisation layers (every parameter with fewer than two dimensions) and embedding tables
(parameters owned by an ``nn.Embedding``, hence also an output layer tied to one) are not decayed:
shrinking a bias or a gain towards zero is not a useful prior, and decaying an embedding pulls
rare tokens' rows to zero simply because they are seldom updated.

Determinism: with the same model initialisation, the same batches and the same ``seed``, the loss
history is identical run to run on the same machine and thread count (``seed`` drives any
randomness inside the model, such as dropout; the batches carry their own seed).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lib.data import eval_batches

__all__ = ["History", "TrainConfig", "bits_per_char", "evaluate_lm", "lr_at", "parameter_groups", "train"]


def _is_real(value: Any) -> bool:
    """An int or a float, but not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_nonnegative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"TrainConfig.{name}: expected a non-negative int, got {value!r}")


def _check_fraction(name: str, value: Any, *, closed: bool) -> None:
    upper_ok = value <= 1 if closed else value < 1
    if not _is_real(value) or not (0 <= value and upper_ok):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"TrainConfig.{name}: expected a number in {interval}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`train` needs besides the model and the data.

    ``lr`` is the peak learning rate, reached after ``warmup_steps`` linear steps; a cosine then
    brings it down to ``min_lr_ratio · lr`` at the last step. ``grad_clip=None`` records the
    gradient norm without clipping. ``eval_every=0`` evaluates only after the last step.
    ``progress=None`` shows a tqdm bar unless the ``CI`` environment variable is set.
    """

    steps: int = 1000
    lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    eval_every: int = 0
    seed: int = 0
    progress: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"TrainConfig.steps: expected a positive int, got {self.steps!r}")
        if not _is_real(self.lr) or not self.lr > 0:
            raise ValueError(f"TrainConfig.lr: expected a positive number, got {self.lr!r}")
        for name in ("warmup_steps", "eval_every", "seed"):
            _check_nonnegative_int(name, getattr(self, name))
        _check_fraction("min_lr_ratio", self.min_lr_ratio, closed=True)
        if not _is_real(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay: expected a non-negative number, got {self.weight_decay!r}")
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise ValueError(f"TrainConfig.betas: expected a pair (beta1, beta2), got {self.betas!r}")
        for beta in self.betas:
            _check_fraction("betas", beta, closed=False)
        if self.grad_clip is not None and (not _is_real(self.grad_clip) or not self.grad_clip > 0):
            raise ValueError(f"TrainConfig.grad_clip: expected a positive number or None, got {self.grad_clip!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ValueError(f"TrainConfig.progress: expected True, False or None, got {self.progress!r}")

    def show_progress(self) -> bool:
        """Whether :func:`train` draws a progress bar: ``progress``, or when it is None, not under CI."""
        return self.progress if self.progress is not None else not os.environ.get("CI")


def lr_at(step: int, config: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine decay.

    Warm-up: ``lr · (step + 1) / warmup_steps`` for ``step < warmup_steps``, so step
    ``warmup_steps − 1`` runs at the peak. Then, with ``t = (step − W) / (steps − 1 − W)`` going
    from 0 to 1, ``lr_min + ½ (lr − lr_min)(1 + cos πt)``: the peak at ``step = W`` and exactly
    ``lr_min = min_lr_ratio · lr`` at the last step.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    lr_min = config.min_lr_ratio * config.lr
    decay_steps = config.steps - 1 - config.warmup_steps
    t = min(1.0, (step - config.warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return lr_min + 0.5 * (config.lr - lr_min) * (1 + math.cos(math.pi * t))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's two groups: linear weight matrices decay; biases, norms and embeddings do not.

    A parameter is exempt when it has fewer than two dimensions (biases, LayerNorm/RMSNorm gains)
    or belongs to an ``nn.Embedding`` (an output layer tied to the embedding is the same tensor,
    so it is exempt too). Each parameter appears once even when it is shared.
    """
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():  # yields a shared (tied) parameter once
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in embeddings else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class History:
    """What a training run recorded, one entry per optimizer step (``steps`` counts from 1).

    ``grad_norm`` is the global L2 norm before clipping. ``eval`` holds ``(step, value)`` pairs
    from the ``evaluate`` callback. ``tokens_per_s`` counts training tokens over the time spent in
    training steps (evaluation excluded); ``seconds`` is the whole run's wall time.
    """

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    eval: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_s: float = 0.0
    seconds: float = 0.0

    def plot(self, ax: Any = None) -> Any:
        """Plot the training loss (and the evaluations, if any) against the step; return the axes."""
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(self.steps, self.train_loss, lw=1, alpha=0.8, label="train loss")
        if self.eval:
            at, values = zip(*self.eval)
            ax.plot(at, values, "o-", label="evaluation")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.legend()
        return ax


def _global_grad_norm(model: nn.Module, grad_clip: float | None) -> float:
    """The L2 norm of all gradients before clipping; clips them to ``grad_clip`` when it is set."""
    grads = [p for p in model.parameters() if p.grad is not None]
    if grad_clip is None:
        return float(torch.nn.utils.get_total_norm([p.grad for p in grads]))
    return float(torch.nn.utils.clip_grad_norm_(grads, grad_clip))


def _evaluate(model: nn.Module, evaluate: Callable[[nn.Module], float]) -> float:
    """Call ``evaluate`` on the model in eval mode without gradients, then return to training mode."""
    model.eval()
    with torch.no_grad():
        value = float(evaluate(model))
    model.train()
    return value


def train(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig,
    *,
    evaluate: Callable[[nn.Module], float] | None = None,
) -> History:
    """Train ``model`` for ``config.steps`` AdamW steps on ``(x, y)`` batches; return the history.

    ``x`` and ``y`` are LongTensors ``(B, T)`` and ``model(x)`` returns logits ``(B, T, V)``.
    ``evaluate(model) -> float`` (e.g. a validation loss) runs every ``config.eval_every`` steps
    and after the last one. The model ends in eval mode. A non-finite loss stops the run with an
    error naming the step.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay), lr=config.lr, betas=config.betas
    )
    history = History()
    start = time.perf_counter()
    train_seconds, tokens = 0.0, 0
    model.train()
    bar = tqdm(range(config.steps), desc="train", disable=not config.show_progress())
    for step in bar:
        step_start = time.perf_counter()
        x, y = next(batches)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = _global_grad_norm(model, config.grad_clip)
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        value = loss.item()
        train_seconds += time.perf_counter() - step_start
        tokens += y.numel()
        if not math.isfinite(value):
            raise FloatingPointError(f"train: the loss became {value} at step {step + 1}; lower TrainConfig.lr?")
        history.steps.append(step + 1)
        history.train_loss.append(value)
        history.lr.append(lr)
        history.grad_norm.append(grad_norm)
        bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        last = step + 1 == config.steps
        if evaluate is not None and (last or (config.eval_every and (step + 1) % config.eval_every == 0)):
            history.eval.append((step + 1, _evaluate(model, evaluate)))
    bar.close()
    model.eval()
    history.tokens_per_s = tokens / train_seconds
    history.seconds = time.perf_counter() - start
    return history


def evaluate_lm(model: nn.Module, ids: np.ndarray | torch.Tensor, batch_size: int, seq_len: int) -> float:
    """Mean next-token cross-entropy of ``model`` over ``ids``, in nats per token.

    Every non-overlapping window of ``seq_len`` inputs from :func:`lib.data.eval_batches` is
    scored once; the mean is over all predicted tokens (each window restarts the context, so the
    first predictions of a window see little of the past). The model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in eval_batches(ids, batch_size, seq_len):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum")
            total += float(loss)
            count += y.numel()
    model.train(was_training)
    if count == 0:
        raise ValueError(f"ids: expected at least seq_len + 1 = {seq_len + 1} tokens to evaluate, got {len(ids)}")
    return total / count


def bits_per_char(nats: float) -> float:
    """Convert a cross-entropy in nats per character to bits per character: ``nats / ln 2``."""
    return nats / math.log(2)
