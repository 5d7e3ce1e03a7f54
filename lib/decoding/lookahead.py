"""Lookahead decoding: Jacobi trajectories as an n-gram draft (Fu et al., arXiv 2402.02057).

Parameters: window W, n-gram size N, at most G verified candidates. One step feeds, after the
committed prefix whose last token c sits at relative position 0,

    lookahead branch      N − 1 levels × W guesses; token (ℓ, i) at relative position i + ℓ + 1
    verification branch   up to G candidates of N − 1 tokens; token (g, j) at position j + 1

with a mask under which every query sees a contiguous context: c, then level 0 up to its own
column (level 0 is one causal row), then the earlier levels of its own column; a candidate token
sees c and its own candidate's earlier tokens. One pass gives

1. a new level: the argmax at every token of the last level, (N − 2, i) → position i + N;
   the oldest level is dropped (a Jacobi update of the window);
2. W n-grams, one per column, (level₀[i], …, level_{N−2}[i], new[i]) over positions i + 1 … i + N,
   stored in the pool under their first token;
3. greedy verification of the candidates (pool n-grams that start with c, without their first
   token): candidate g keeps its leading tokens that equal the target's argmax at the previous
   position; the longest wins, and the argmax after its last kept token comes free.

Every emitted token is an argmax of the model given the exact committed context, so the output is
greedy decoding's. The cache keeps only committed tokens. Step compression S = tokens / steps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from lib.decoding.jacobi import StepFn, check_decode_args, check_prefix
from lib.decoding.masks import extend_mask, masked_forward
from lib.models.decoder import Decoder
from lib.validation import check_positive_int

__all__ = [
    "LookaheadStats",
    "NGramPool",
    "harvest_ngrams_ref",
    "init_levels",
    "lookahead_decode",
    "lookahead_decode_ref",
    "lookahead_mask",
    "lookahead_mask_ref",
    "verify_greedy",
    "verify_greedy_ref",
]


def _check_wng(W: int, N: int, G: int) -> None:
    check_positive_int("W", W)
    check_positive_int("N", N)
    if N < 2:
        raise ValueError(f"N: expected an n-gram size ≥ 2, got {N}")
    if isinstance(G, bool) or not isinstance(G, int) or G < 0:
        raise ValueError(f"G: expected an int ≥ 0 (candidates verified per step), got {G!r}")


# ----------------------------------------------------------------------------- NumPy references


def lookahead_mask_ref(W: int, N: int, G: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask (T, T) bool and relative positions (T,) of one step, T = 1 + (N − 1)·W + G·(N − 1).

    Index 0 is c; lookahead token (ℓ, i) is index 1 + ℓ·W + i; candidate token (g, j) is index
    1 + (N − 1)·W + g·(N − 1) + j. Built with loops, one visibility rule at a time.
    """
    _check_wng(W, N, G)
    def look(level: int, col: int) -> int:
        return 1 + level * W + col

    def cand(g: int, j: int) -> int:
        return 1 + (N - 1) * W + g * (N - 1) + j

    size = cand(G, 0)
    mask, pos = np.zeros((size, size), dtype=bool), np.zeros(size, dtype=np.int64)
    mask[:, 0] = True                                            # everybody sees c
    for level in range(N - 1):
        for col in range(W):
            q = look(level, col)
            pos[q] = col + level + 1
            for j in range(col + 1):
                mask[q, look(0, j)] = True                       # level 0 up to its own column
            for earlier in range(1, level + 1):
                mask[q, look(earlier, col)] = True               # its column's later levels, itself
    for g in range(G):
        for j in range(N - 1):
            pos[cand(g, j)] = j + 1
            for earlier in range(j + 1):
                mask[cand(g, j), cand(g, earlier)] = True
    return mask, pos


def harvest_ngrams_ref(levels: np.ndarray, N: int) -> list[tuple[int, ...]]:
    """The W n-grams of a window: column i of levels (N, W) read top to bottom.

    ``levels`` stacks the N − 1 input levels and the new level the step produced.
    """
    levels = np.asarray(levels)
    if levels.ndim != 2 or levels.shape[0] != N:
        raise ValueError(f"levels: expected shape (N={N}, W), got {levels.shape}")
    return [tuple(int(t) for t in levels[:, col]) for col in range(levels.shape[1])]


def verify_greedy_ref(candidates: np.ndarray, target_argmax: np.ndarray) -> list[int]:
    """Greedy verification → the 1 … N emitted tokens.

    candidates (G, N − 1); target_argmax (G, N): column 0 is the argmax after c, column j + 1 the
    argmax after candidate token (g, j). Candidate g keeps its tokens while cand[g, j] =
    target_argmax[g, j]; the first longest wins and emits its kept tokens plus the next argmax.
    """
    candidates, target_argmax = np.asarray(candidates), np.asarray(target_argmax)
    if candidates.ndim != 2 or target_argmax.shape != (candidates.shape[0], candidates.shape[1] + 1):
        raise ValueError(
            f"target_argmax: expected shape (G, N) for candidates (G, N − 1) = {candidates.shape}, got {target_argmax.shape}"
        )
    if candidates.shape[0] == 0:
        raise ValueError("candidates: expected at least one candidate row")
    best, best_len = 0, -1
    for g in range(candidates.shape[0]):
        kept = 0
        while kept < candidates.shape[1] and candidates[g, kept] == target_argmax[g, kept]:
            kept += 1
        if kept > best_len:
            best, best_len = g, kept
    return [int(t) for t in candidates[best, :best_len]] + [int(target_argmax[best, best_len])]


class NGramPool:
    """n-grams by first token; each key keeps its G most recently harvested continuations.

    ``add(ngram)`` stores ngram[1:] under ngram[0] (refreshing it if present);
    ``candidates(token)`` returns them newest first, as a (g, N − 1) int array (g ≤ G).
    """

    def __init__(self, N: int, G: int) -> None:
        self.N, self.G = N, G
        self._pool: dict[int, OrderedDict[tuple[int, ...], None]] = {}

    def add(self, ngram: tuple[int, ...]) -> None:
        if self.G == 0:
            return
        slot = self._pool.setdefault(ngram[0], OrderedDict())
        slot.pop(ngram[1:], None)
        slot[ngram[1:]] = None
        while len(slot) > self.G:
            slot.popitem(last=False)

    def candidates(self, token: int) -> np.ndarray:
        rows = list(reversed(self._pool.get(token, OrderedDict())))
        return np.array(rows, dtype=np.int64).reshape(len(rows), self.N - 1)

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._pool.values())


def init_levels(prompt: np.ndarray, W: int, N: int) -> np.ndarray:
    """The first window (N − 1, W): level ℓ, column i holds prompt[(i + ℓ) mod L], a guess that
    the text repeats (any guess is exact; better guesses only harvest better n-grams sooner)."""
    prompt = np.asarray(prompt)
    return np.stack([prompt[(np.arange(W) + level) % len(prompt)] for level in range(N - 1)]).astype(np.int64)


@dataclass
class LookaheadStats:
    """Steps (forward passes after the prefill) and tokens emitted; ``accepted[s]`` per step."""

    accepted: list[int] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.accepted)

    def compression(self) -> float:
        """Step compression S = tokens / steps."""
        return sum(self.accepted) / max(self.steps, 1)


def _step_inputs(c: int, levels: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """The step's tokens in mask order: [c ; levels row by row ; candidates row by row]."""
    return np.concatenate([[c], levels.ravel(), cands.ravel()]).astype(np.int64)


def lookahead_decode_ref(
    step_fn: StepFn, prefix: np.ndarray, n: int, W: int, N: int, G: int,
    verify: Callable[[np.ndarray, np.ndarray], list[int]] = verify_greedy_ref,
) -> tuple[np.ndarray, LookaheadStats]:
    """Lookahead decoding in NumPy → (n tokens, stats). Each query's argmax is step_fn on the
    committed sequence followed by the step tokens its mask row shows, sorted by position;
    ``verify`` is the verification rule (an exercise plugs its own in)."""
    _check_wng(W, N, G)
    check_positive_int("n", n)
    seq, stats, pool = check_prefix(prefix), LookaheadStats(), NGramPool(N, G)
    levels = init_levels(seq, W, N)
    while len(seq) - len(prefix) < n:
        cands = pool.candidates(int(seq[-1]))
        mask, pos = lookahead_mask_ref(W, N, len(cands))
        tokens = _step_inputs(int(seq[-1]), levels, cands)
        argmax = np.empty(len(tokens), dtype=np.int64)
        for q in range(len(tokens)):
            seen = sorted(np.flatnonzero(mask[q])[1:], key=lambda k: pos[k])
            argmax[q] = step_fn(np.concatenate([seq, tokens[seen]]))[-1]
        new_level = argmax[1 + (N - 2) * W : 1 + (N - 1) * W]
        for ngram in harvest_ngrams_ref(np.vstack([levels, new_level]), N):
            pool.add(ngram)
        levels = np.vstack([levels[1:], new_level])
        if len(cands):
            rows = argmax[1 + (N - 1) * W :].reshape(len(cands), N - 1)
            emitted = verify(cands.copy(), np.hstack([np.full((len(cands), 1), argmax[0]), rows]))
        else:
            emitted = [int(argmax[0])]
        emitted = emitted[: n - (len(seq) - len(prefix))]
        stats.accepted.append(len(emitted))
        seq = np.concatenate([seq, emitted])
    return seq[len(prefix) :], stats


# ----------------------------------------------------------------------------- torch


@lru_cache(maxsize=64)
def lookahead_mask(W: int, N: int, G: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's mask (T, T) bool and relative positions (T,), built by tensor ops and cached.

    Same layout as :func:`lookahead_mask_ref`: [c ; N − 1 levels × W ; G candidates × (N − 1)].
    """
    _check_wng(W, N, G)
    level = torch.arange(N - 1).repeat_interleave(W)                   # (L,) for the lookahead tokens
    col = torch.arange(W).repeat(N - 1)
    look_pos = col + level + 1
    first_row = (level[None, :] == 0) & (col[None, :] <= col[:, None])  # level 0 up to its column
    own_col = (col[None, :] == col[:, None]) & (level[None, :] >= 1) & (level[None, :] <= level[:, None])
    cand = torch.arange(G).repeat_interleave(N - 1)
    j = torch.arange(N - 1).repeat(G)
    cand_mask = (cand[None, :] == cand[:, None]) & (j[None, :] <= j[:, None])
    size = 1 + len(level) + len(cand)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[:, 0] = True
    mask[1 : 1 + len(level), 1 : 1 + len(level)] = first_row | own_col
    mask[1 + len(level) :, 1 + len(level) :] = cand_mask
    return mask, torch.cat([torch.zeros(1, dtype=torch.long), look_pos, j + 1])


def verify_greedy(candidates: torch.Tensor, target_argmax: torch.Tensor) -> list[int]:
    """:func:`verify_greedy_ref` without loops: candidates (G, N − 1), target_argmax (G, N) → tokens."""
    kept = torch.cumprod((candidates == target_argmax[:, :-1]).int(), dim=1).sum(1)  # (G,)
    best = int(torch.argmax(kept))                                                     # first longest
    n = int(kept[best])
    return candidates[best, :n].tolist() + [int(target_argmax[best, n])]


@torch.no_grad()
def lookahead_decode(
    model: Decoder, prompt: torch.Tensor, max_new: int, W: int, N: int, G: int, *, stats: LookaheadStats | None = None
) -> torch.Tensor:
    """Greedy decoding by lookahead steps → the max_new new tokens (max_new,), exactly greedy's.

    Each step is one :func:`masked_forward` over [committed tokens not yet cached ; window ;
    candidates]; the cache is then truncated to the committed tokens.
    """
    check_decode_args(model, prompt, max_new)
    _check_wng(W, N, G)
    if prompt.numel() + max_new + W + N > model.config.max_seq_len:
        raise ValueError(
            f"max_new: prompt {prompt.numel()} + {max_new} new + the window's reach W + N = {W + N} "
            f"exceeds max_seq_len {model.config.max_seq_len}"
        )
    stats, pool = stats if stats is not None else LookaheadStats(), NGramPool(N, G)
    levels = init_levels(prompt.numpy(), W, N)
    cache, seq = model.new_cache(1), prompt.tolist()
    if len(seq) > 1:
        model(prompt[None, :-1], cache)
    look = slice(1 + (N - 2) * W, 1 + (N - 1) * W)
    while len(seq) - len(prompt) < max_new:
        pending, cands = seq[cache.length :], pool.candidates(seq[-1])
        block, rel = lookahead_mask(W, N, len(cands))
        start, before = cache.length, len(pending) - 1
        ids = torch.as_tensor(pending[:-1] + _step_inputs(seq[-1], levels, cands).tolist())[None]
        positions = torch.cat([torch.arange(start, start + before), rel + start + before])
        argmax = masked_forward(model, ids, positions, extend_mask(block, before, start), cache)[0, before:].argmax(-1)
        cache.truncate(start + len(pending))                           # keep the committed tokens only
        new_level = argmax[look].numpy()
        for ngram in harvest_ngrams_ref(np.vstack([levels, new_level]), N):
            pool.add(ngram)
        levels = np.vstack([levels[1:], new_level])
        if len(cands):
            rows = argmax[1 + (N - 1) * W :].view(len(cands), N - 1)
            first = argmax[:1].expand(len(cands), 1)
            emitted = verify_greedy(torch.as_tensor(cands), torch.cat([first, rows], dim=1))
        else:
            emitted = [int(argmax[0])]
        emitted = emitted[: max_new - (len(seq) - len(prompt))]
        stats.accepted.append(len(emitted))
        seq += emitted
    return torch.as_tensor(seq[len(prompt) :])
