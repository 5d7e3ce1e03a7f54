"""Toy language models whose laws can be enumerated, and broken verifiers: the test bench of 07.2.

A statistical test needs the exact law it compares samples with. For a real model that is one
big batched call at most; for a small Markov chain over a few tokens it is a sum we can write out:

* :class:`MarkovLM` — next-token rows p(· | last ``order`` tokens), a seeded random table, float64;
* :class:`CachedMarkovLM` — the same model behind the Decoder protocol (``new_cache``, a call on
  ``ids (1, t)`` returning log-probabilities as logits, ``cache.truncate``), so the library's
  :func:`~lib.decoding.speculative.speculative_generate` runs on it unchanged, rollback included;
* :func:`exact_joint` — the law of the next L tokens, all V^L continuations enumerated;
* :func:`exact_accept_len_law` — the law of the number of drafts accepted in one round;
* :func:`first_token_counts`, :func:`sample_counts` — seeded histograms of what a rule or the
  whole generator emits, to hold against those laws;
* :data:`MUTANTS` and :class:`NoRollback` — deliberately wrong variants of the rule, which a test
  with power must reject.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from lib.decoding.drafts import ContextModel
from lib.decoding.reference import inverse_cdf, residual
from lib.decoding.speculative import SpecStats, Verifier, speculative_generate, speculative_step
from lib.validation import check_positive_int, check_seed

__all__ = [
    "MUTANTS",
    "CachedMarkovLM",
    "MarkovLM",
    "NoRollback",
    "acceptance_length_law",
    "blind_draft_rows",
    "exact_accept_len_law",
    "exact_joint",
    "first_token_counts",
    "sample_counts",
]


class RowModel(Protocol):
    """Anything that gives the next-token law after a prefix."""

    def next_probs(self, prefix: list[int]) -> np.ndarray: ...


# ----------------------------------------------------------------------------- models


class MarkovLM:
    """An order-k Markov chain over V tokens: p(x_t | x_{t−k}..x_{t−1}), a seeded random table.

    ``table`` is (V^k, V) float64, row i the law after the context whose base-V digits are i
    (oldest token first). Positions before the start of a prefix read as token 0. Rows are
    Dirichlet(``concentration``) draws, so some are peaked and some flat.
    """

    def __init__(self, order: int, vocab: int, seed: int, concentration: float = 0.7) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order: expected an int ≥ 0, got {order!r}")
        check_positive_int("vocab", vocab)
        check_seed(seed)
        if not concentration > 0:
            raise ValueError(f"concentration: expected a number > 0, got {concentration!r}")
        self.order, self.vocab = order, vocab
        self.table = np.random.default_rng(seed).dirichlet(np.full(vocab, float(concentration)), size=vocab**order)

    def context_index(self, prefix: list[int]) -> int:
        """Row of the table for a prefix: its last ``order`` tokens (0-padded on the left) in base V."""
        context = ([0] * self.order + list(prefix))[len(prefix):] if self.order else []
        return int(np.ravel_multi_index(context, (self.vocab,) * self.order)) if self.order else 0

    def next_probs(self, prefix: list[int]) -> np.ndarray:
        """p(· | prefix), shape (V,) float64."""
        return self.table[self.context_index(prefix)]


@dataclass(frozen=True)
class ToyConfig:
    """What the Decoder protocol reads."""

    vocab_size: int
    max_seq_len: int


class CachedMarkovLM(ContextModel):
    """A :class:`MarkovLM` with the Decoder protocol (batch 1): logits = ln p in float64.

    The cache (:class:`~lib.decoding.drafts.ContextCache`) holds the tokens fed so far; a call on
    ``ids (1, t)`` appends them and returns the rows after each, (1, t, V). A zero probability
    becomes a −inf logit, which the sampling transform maps back to 0.
    """

    def __init__(self, lm: MarkovLM, max_seq_len: int = 1024) -> None:
        if not isinstance(lm, MarkovLM):
            raise TypeError(f"lm: expected a MarkovLM, got {type(lm).__name__}")
        check_positive_int("max_seq_len", max_seq_len)
        self.lm = lm
        self.config = ToyConfig(lm.vocab, max_seq_len)

    def next_probs(self, prefix: list[int]) -> np.ndarray:
        """p(· | prefix), shape (V,) float64 (the underlying chain's row)."""
        return self.lm.next_probs(prefix)

    def logits_after(self, tokens: list[int]) -> torch.Tensor:
        """ln p(· | tokens) in float64; a zero probability becomes −inf."""
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self.lm.next_probs(tokens)))


class NoRollback:
    """Bug (e): a target whose cache ignores ``truncate``, so rejected drafts stay in its context."""

    def __init__(self, model: Any) -> None:
        self.model, self.config = model, model.config

    def new_cache(self, batch_size: int) -> Any:
        """The wrapped model's cache, with ``truncate`` made a no-op."""
        cache = self.model.new_cache(batch_size)
        cache.truncate = lambda length: None  # the bug: stale entries are never dropped
        return cache

    def __call__(self, ids: torch.Tensor, cache: Any) -> torch.Tensor:
        """The wrapped model's logits (1, t, V), read from a context that may hold stale tokens."""
        return self.model(ids, cache)


# ----------------------------------------------------------------------------- exact laws


def exact_joint(model: RowModel, prefix: list[int], length: int) -> np.ndarray:
    """P(x_1..x_L | prefix) for all V^L continuations, flattened (V^L,) in row-major order.

    P = Π_i p(x_i | prefix, x_<i), built one position at a time (outer products of the rows).
    """
    check_positive_int("length", length)
    law = np.ones(1)
    paths: list[tuple[int, ...]] = [()]
    for _ in range(length):
        rows = np.stack([model.next_probs(list(prefix) + list(path)) for path in paths])  # (V^i, V)
        law = (law[:, None] * rows).reshape(-1)
        paths = [path + (x,) for path in paths for x in range(rows.shape[1])]
    return law


def exact_accept_len_law(p_model: RowModel, q_model: RowModel, prefix: list[int], gamma: int) -> np.ndarray:
    """The law (γ+1,) of N, the drafts accepted in one round of γ after ``prefix``.

    P(N ≥ k) = Σ_{x_1..x_k} Π_{i≤k} min(p_i(x_i), q_i(x_i)) (drafted with q, kept with min(1, p/q)),
    rows conditioned on prefix + x_<i; P(N = k) = P(N ≥ k) − P(N ≥ k+1), P(N = γ) = P(N ≥ γ).
    """
    check_positive_int("gamma", gamma)
    at_least = [1.0]
    weights = {(): 1.0}  # path → Π min(p, q) along it
    for _ in range(gamma):
        grown = {}
        for path, w in weights.items():
            context = list(prefix) + list(path)
            keep = np.minimum(p_model.next_probs(context), q_model.next_probs(context))
            grown.update({path + (x,): w * float(keep[x]) for x in np.flatnonzero(keep)})
        weights = grown
        at_least.append(sum(weights.values()))
    at_least.append(0.0)
    return -np.diff(np.array(at_least))


def acceptance_length_law(betas: Any, gamma: int) -> np.ndarray:
    """Law (γ+1,) of the accepted drafts N when position i is accepted with probability β_i, independently.

    P(N = k) = Π_{i≤k} β_i · (1 − β_{k+1}) for k < γ and P(N = γ) = Π_{i≤γ} β_i; ``betas`` is (γ,)
    or one α for every position (the i.i.d. model of the speed-up formula).
    """
    check_positive_int("gamma", gamma)
    betas = np.broadcast_to(np.asarray(betas, dtype=np.float64), (gamma,))
    survive = np.concatenate([[1.0], np.cumprod(betas)])  # P(N ≥ k), k = 0..γ
    return survive * np.concatenate([1.0 - betas, [1.0]])


# ----------------------------------------------------------------------------- broken rules


def _accepted(p_rows: np.ndarray, q_rows: np.ndarray, drafts: np.ndarray, uniforms: np.ndarray) -> int:
    """n: how many drafts pass r_i < p_i(x̃_i)/q_i(x̃_i) before the first failure."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = p_rows[np.arange(len(drafts)), drafts] / q_rows[np.arange(len(drafts)), drafts]
    failed = np.flatnonzero(~(uniforms < ratios))
    return int(failed[0]) if failed.size else len(drafts)


def _emit(rule: Callable[..., tuple[int, np.ndarray]]) -> Verifier:
    """A verifier from ``rule(p, q, drafts, uniforms) -> (n, row to sample the last token from)``."""

    def verify(p_rows: torch.Tensor, q_rows: torch.Tensor, drafts: torch.Tensor, uniforms: torch.Tensor, u: Any) -> list[int]:
        p, q, x, r = (t.double().numpy() if t.is_floating_point() else t.numpy() for t in (p_rows, q_rows, drafts, uniforms))
        n, row = rule(p, q, x, r)
        return x[:n].tolist() + [inverse_cdf(row, float(u))]

    return verify


def _last_row(p: np.ndarray, q: np.ndarray, n: int) -> np.ndarray:
    """The correct row of the extra token: the residual (p_n − q_n)_+ after a rejection, p_{γ+1} after none."""
    return residual(p[n], q[n]) if n < len(q) else p[n]


def _resample_from_p(p: np.ndarray, q: np.ndarray, x: np.ndarray, r: np.ndarray) -> tuple[int, np.ndarray]:
    n = _accepted(p, q, x, r)
    return n, p[n]  # bug (a): p instead of the residual


def _inverted_ratio(p: np.ndarray, q: np.ndarray, x: np.ndarray, r: np.ndarray) -> tuple[int, np.ndarray]:
    n = _accepted(q, p, x, r)  # bug (b): accept with min(1, q/p)
    return n, _last_row(p, q, n)


def _off_by_one(p: np.ndarray, q: np.ndarray, x: np.ndarray, r: np.ndarray) -> tuple[int, np.ndarray]:
    shifted = np.concatenate([p[1:], p[-1:]])  # bug (c): x̃_i judged (and corrected) with p_{i+1}
    n = _accepted(shifted, q, x, r)
    return n, _last_row(shifted, q, n)


def _bonus_from_q(p: np.ndarray, q: np.ndarray, x: np.ndarray, r: np.ndarray) -> tuple[int, np.ndarray]:
    n = _accepted(p, q, x, r)
    return n, (q[-1] if n == len(q) > 0 else _last_row(p, q, n))  # bug (d): the bonus token from q_γ


MUTANTS: dict[str, Verifier] = {
    "(a) resample from p, not (p − q)+": _emit(_resample_from_p),
    "(b) inverted ratio min(1, q/p)": _emit(_inverted_ratio),
    "(c) off-by-one rows p_{i+1}": _emit(_off_by_one),
    "(d) bonus token from q": _emit(_bonus_from_q),
}
"""Broken verifiers with the signature of :func:`~lib.decoding.speculative.speculative_step`; bug (e) is :class:`NoRollback`."""


# ----------------------------------------------------------------------------- Monte Carlo


def blind_draft_rows(vocab: int, gamma: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded rows of one round: p_rows (γ+1, V) and q_rows (γ, V), with q_1 = 0 at p_1's most likely token.

    A draft that never proposes the target's favourite makes the residual carry real weight, so a
    wrong residual (bug a) or ratio (bug b) changes the law of the first token visibly.
    """
    rng = np.random.default_rng(seed)
    p_rows = rng.dirichlet(np.full(vocab, 0.8), size=gamma + 1)
    q_rows = rng.dirichlet(np.full(vocab, 0.8), size=gamma)
    q_rows[0, p_rows[0].argmax()] = 0.0
    return p_rows, q_rows / q_rows.sum(-1, keepdims=True)


def first_token_counts(verify: Verifier, p_rows: np.ndarray, q_rows: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Histogram (V,) of the first token ``verify`` emits over ``draws`` rounds, drafts x̃_i ~ q_i.

    p_rows (γ+1, V) and q_rows (γ, V) are fixed float64 rows; each round draws fresh drafts and
    uniforms from ``numpy.random.default_rng(seed)``. Under a correct rule the law is p_rows[0].
    """
    check_positive_int("draws", draws)
    rng = np.random.default_rng(seed)
    p, q = torch.from_numpy(p_rows), torch.from_numpy(q_rows)
    counts = np.zeros(p_rows.shape[1])
    for _ in range(draws):
        drafts = torch.tensor([rng.choice(q_rows.shape[1], p=row) for row in q_rows], dtype=torch.long)
        counts[verify(p, q, drafts, torch.from_numpy(rng.random(len(q_rows))), float(rng.random()))[0]] += 1
    return counts


def sample_counts(
    target: Any, draft: Any, prompt: list[int], *, length: int, gamma: int, samples: int, seed: int,
    verify: Verifier = speculative_step,
) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`speculative_generate` ``samples`` times → histograms of the continuation and of n.

    Returns the counts (V^length,) of each continuation of ``prompt`` (row-major, as
    :func:`exact_joint` orders them) and the counts (γ+1,) of the drafts accepted in the first
    round (whose γ is min(γ, length − 1)). One ``torch.Generator`` seeded with ``seed`` drives all.
    """
    check_positive_int("samples", samples)
    vocab = target.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    joint, accepted = np.zeros(vocab**length), np.zeros(min(gamma, length - 1) + 1)
    for _ in range(samples):
        stats = SpecStats()
        out = speculative_generate(target, draft, torch.tensor(prompt), gamma=gamma, max_new=length,
                                   generator=generator, stats=stats, verify=verify)
        joint[np.ravel_multi_index(out[len(prompt):].tolist(), (vocab,) * length)] += 1
        accepted[stats.accepted[0]] += 1
    return joint, accepted
