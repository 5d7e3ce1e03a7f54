"""Greedy decoding as a fixed-point problem: Jacobi decoding (Santilli et al., arXiv 2305.10427).

Greedy decoding of a block of b tokens after a prefix x solves the triangular system

    y_i = argmax_v p(v | x, y_1 … y_{i−1}),        i = 1 … b.

Jacobi iteration guesses the whole block (y⁽⁰⁾ = [pad] × b) and updates every unknown in parallel,
one forward pass per iteration:

    y_i⁽ᵏ⁺¹⁾ = argmax_v p(v | x, y⁽ᵏ⁾_{<i})        for all i at once.

Invariant: if y⁽ᵏ⁾_{<j} is already greedy then y⁽ᵏ⁺¹⁾_j is too, so after k iterations at least the
first k tokens are exact, and a block is exact after at most b iterations. We stop as soon as an
iteration leaves the first b − 1 tokens unchanged: they then solve the system, and the last token,
computed from them, is exact as well. PGJ (parallel Gauss–Seidel–Jacobi) runs Jacobi inside
blocks, one block after the other. Recording the iteration at which each token took its final value
gives the *settle map* behind the paper's decoding dependency graph (DDGviz).

A ``step_fn`` is the NumPy stand-in for one forward pass: ``step_fn(seq) -> argmaxes`` with
``argmaxes[t] = argmax_v p(v | seq[: t + 1])``, both (T,) ints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from lib.models.decoder import Decoder, KVCache
from lib.validation import check_positive_int, check_tensor

__all__ = [
    "JacobiTrace",
    "check_decode_args",
    "check_prefix",
    "StepFn",
    "ddg",
    "greedy_decode",
    "greedy_ref",
    "jacobi_block_ref",
    "jacobi_decode",
    "markov_step_fn",
    "pgj_ref",
    "settle_iterations",
]

StepFn = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- NumPy references


def check_prefix(prefix: np.ndarray) -> np.ndarray:
    """``prefix`` as a non-empty 1-D int64 array of token ids, or a ValueError naming it."""
    prefix = np.asarray(prefix)
    if prefix.ndim != 1 or prefix.size == 0 or not np.issubdtype(prefix.dtype, np.integer):
        raise ValueError(f"prefix: expected a non-empty 1-D array of token ids, got {prefix.dtype} shape {prefix.shape}")
    return prefix.astype(np.int64)


def markov_step_fn(table: np.ndarray) -> StepFn:
    """A toy first-order LM as a step_fn: the argmax after token t is ``table[t]``; table (V,) ints."""
    table = np.asarray(table)
    if table.ndim != 1 or not np.issubdtype(table.dtype, np.integer) or table.min() < 0 or table.max() >= len(table):
        raise ValueError(f"table: expected a 1-D int array with entries in [0, {len(table)}), got {table!r}")
    return lambda seq: table[np.asarray(seq)]


def greedy_ref(step_fn: StepFn, prefix: np.ndarray, n: int) -> np.ndarray:
    """Autoregressive greedy decoding: n forward passes, one token each → (n,) ints."""
    check_positive_int("n", n)
    seq = check_prefix(prefix)
    for _ in range(n):
        seq = np.append(seq, int(step_fn(seq)[-1]))
    return seq[-n:]


def settle_iterations(history: np.ndarray) -> np.ndarray:
    """Iteration (1-based) from which each token keeps its final value, for history (K, b) → (b,).

    ``history[k]`` is the block after iteration k + 1; the last row is final.
    """
    changed = history != history[-1]                        # (K, b): differs from the final token
    last_wrong = np.where(changed.any(0), changed.shape[0] - 1 - np.argmax(changed[::-1], axis=0), -1)
    return last_wrong + 2                                   # the iteration after the last wrong one


def jacobi_block_ref(
    step_fn: StepFn, prefix: np.ndarray, b: int, max_iter: int, pad: int = 0
) -> tuple[np.ndarray, int, np.ndarray]:
    """Jacobi iteration on one block of b tokens → (tokens (b,), iterations, settle_iter (b,)).

    Starts from [pad] × b; iteration k reads the b argmaxes at positions L − 1 … L + b − 2 of
    [prefix (L,) ; y⁽ᵏ⁻¹⁾]. Stops when y⁽ᵏ⁾_{<b} = y⁽ᵏ⁻¹⁾_{<b} or after ``max_iter`` iterations
    (b suffice for an exact block).
    """
    check_positive_int("b", b)
    check_positive_int("max_iter", max_iter)
    prefix = check_prefix(prefix)
    block, history = np.full(b, pad, dtype=np.int64), []
    for _ in range(max_iter):
        new = np.asarray(step_fn(np.concatenate([prefix, block])))[len(prefix) - 1 : len(prefix) - 1 + b]
        history.append(new)
        done = np.array_equal(new[:-1], block[:-1])
        block = new.astype(np.int64)
        if done:
            break
    return block, len(history), settle_iterations(np.stack(history))


def pgj_ref(
    step_fn: StepFn, prefix: np.ndarray, n: int, b: int, pad: int = 0
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """PGJ: Jacobi inside consecutive blocks of b tokens (the last may be shorter).

    Returns (tokens (n,), iterations per block, settle (n,)) where settle[t] is the global
    forward-pass index (1-based, counting every block's iterations) at which token t settled.
    """
    check_positive_int("n", n)
    seq, iters, settle = check_prefix(prefix), [], []
    while len(seq) - len(prefix) < n:
        size = min(b, n - (len(seq) - len(prefix)))
        tokens, k, s = jacobi_block_ref(step_fn, seq, size, size, pad)
        settle.append(s + sum(iters))
        seq, iters = np.concatenate([seq, tokens]), iters + [k]
    return seq[len(prefix) :], iters, np.concatenate(settle)


# ----------------------------------------------------------------------------- torch, with a KV cache


@dataclass
class JacobiTrace:
    """What one decode did: ``iters[j]`` forward passes for block j, ``settle[t]`` the global pass
    (1-based) at which token t took its final value; :meth:`tokens_per_pass` = tokens / passes."""

    iters: list[int] = field(default_factory=list)
    settle: list[int] = field(default_factory=list)

    @property
    def passes(self) -> int:
        return sum(self.iters)

    def tokens_per_pass(self) -> float:
        return len(self.settle) / max(self.passes, 1)


def check_decode_args(model: Decoder, prompt: torch.Tensor, max_new: int) -> None:
    """A Decoder, a non-empty 1-D prompt and max_new ≥ 1 that fit in max_seq_len, or an error naming the argument."""
    if not isinstance(model, Decoder):
        raise TypeError(f"model: expected a lib.models.Decoder, got {type(model).__name__}")
    check_tensor("prompt", prompt)
    if prompt.ndim != 1 or prompt.numel() == 0:
        raise ValueError(f"prompt: expected a non-empty 1-D tensor of token ids, got shape {tuple(prompt.shape)}")
    check_positive_int("max_new", max_new)
    if prompt.numel() + max_new > model.config.max_seq_len:
        raise ValueError(
            f"max_new: prompt {prompt.numel()} + {max_new} new tokens exceeds max_seq_len {model.config.max_seq_len}"
        )


@torch.no_grad()
def greedy_decode(model: Decoder, prompt: torch.Tensor, max_new: int) -> torch.Tensor:
    """The baseline: one cached forward pass per token → the max_new new tokens (max_new,)."""
    check_decode_args(model, prompt, max_new)
    cache, new, out = model.new_cache(1), prompt[None], []
    for _ in range(max_new):
        new = model(new, cache)[:, -1:].argmax(-1)
        out.append(new)
    return torch.cat(out, dim=1)[0]


def _jacobi_block(
    model: Decoder, cache: KVCache, pending: torch.Tensor, size: int, pad: int
) -> tuple[torch.Tensor, int, np.ndarray]:
    """Jacobi on one block after the cached prefix and the not-yet-cached tokens ``pending`` (1, P).

    Each pass feeds [pending ; guess] (1, P + size) and reads ``size`` argmaxes; the cache is
    rolled back after every pass and finally keeps pending plus the block's leading tokens whose
    inputs were already final (never the last one, whose output row the next block needs). Returns (block (1, size), passes, settle (size,) 1-based).
    """
    start, p = cache.length, pending.shape[1]
    block, history = torch.full((1, size), pad, dtype=pending.dtype), []
    for _ in range(size):
        cache.truncate(start)
        new = model(torch.cat([pending, block], dim=1), cache)[:, p - 1 : p - 1 + size].argmax(-1)
        history.append(new[0].numpy())
        same = (new == block)[0]
        block, done = new, bool(same[:-1].all())
        if done:
            break
    kept = int(torch.cumprod(same[:-1].int(), 0).sum())      # leading inputs equal to their outputs,
    cache.truncate(start + p + kept)                         # the last token stays pending: its logits start the next block
    return block, len(history), settle_iterations(np.stack(history))


@torch.no_grad()
def jacobi_decode(
    model: Decoder, prompt: torch.Tensor, max_new: int, block: int, *, pad: int = 0, trace: JacobiTrace | None = None
) -> torch.Tensor:
    """Greedy decoding by PGJ: Jacobi in blocks of ``block`` tokens → the max_new new tokens (max_new,).

    Exactly :func:`greedy_decode`'s output; ``trace`` (if given) records passes and the settle map.
    The prompt's prefill pass is not counted as a Jacobi pass.
    """
    check_decode_args(model, prompt, max_new)
    check_positive_int("block", block)
    cache, trace = model.new_cache(1), trace if trace is not None else JacobiTrace()
    seq = prompt[None]
    if prompt.numel() > 1:
        model(seq[:, :-1], cache)                            # prefill; the last prompt token stays pending
    while seq.shape[1] - prompt.numel() < max_new:
        size = min(block, max_new - (seq.shape[1] - prompt.numel()))
        tokens, k, settle = _jacobi_block(model, cache, seq[:, cache.length :], size, pad)
        trace.settle.extend((settle + trace.passes).tolist())
        trace.iters.append(k)
        seq = torch.cat([seq, tokens], dim=1)
    return seq[0, prompt.numel() :]


def ddg(trace: JacobiTrace) -> np.ndarray:
    """The settle map as a grid (passes, tokens): 1 where token t is final after pass k, else 0.

    Read column-wise, it shows which tokens a pass fixed together (the paper's DDGviz).
    """
    settle = np.asarray(trace.settle)
    return (np.arange(1, trace.passes + 1)[:, None] >= settle[None, :]).astype(np.int64)
