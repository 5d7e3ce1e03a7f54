"""Greedy speculative decoding of an SSM with a static draft tree (STree's setting, at T = 0).

One round: the n-gram count model fills a tree of fixed shape below the last emitted token (the
root) with its top candidates; the SSM scores every node in ONE call
(:meth:`lib.models.ssd_lm.SSDLM.tree_forward`); greedy verification walks down from the root
while a child carries the target's argmax at its parent; the argmax after the last accepted node
comes free. The cache then jumps to the end of the accepted path (:meth:`SSDLM.commit`).

Every emitted token is the target's argmax given the exact committed text, so the output equals
autoregressive greedy decoding. A chain is the tree with branching (1, 1, …, 1): chain
speculative decoding with γ = depth runs through the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from lib.models.ssd_lm import SSDCache, SSDLM
from lib.ngram import NGramModel
from lib.recurrent.ssd_tree import Tree, make_tree, root_path
from lib.validation import check_dtype, check_ndim, check_positive_int, check_tensor

__all__ = [
    "NGramProposer",
    "TreeStats",
    "greedy_generate",
    "score_unrolled",
    "static_tree",
    "tree_speculative_generate",
    "verify_greedy_tree",
]


def static_tree(branching: tuple[int, ...]) -> list[int]:
    """Parents of the tree whose level-d nodes each get ``branching[d]`` children; node 0 is the root.

    Nodes are numbered level by level, so a parent always precedes its children. (3, 2, 1) gives
    1 + 3 + 6 + 6 = 16 nodes; (1, 1, 1, 1) is a chain of 5 (the root and γ = 4 drafts).
    """
    if not isinstance(branching, tuple) or not branching:
        raise ValueError(f"branching: expected a non-empty tuple of positive ints, got {branching!r}")
    for b in branching:
        check_positive_int("branching", b)
    parents, level = [-1], [0]
    for b in branching:
        nxt = []
        for node in level:
            for _ in range(b):
                nxt.append(len(parents))
                parents.append(node)
        level = nxt
    return parents


class NGramProposer:
    """The count model's candidates: ``ranked(context)`` lists token ids by falling probability.

    A row depends only on the last n − 1 tokens; each is ranked once and memoised (LRU).
    """

    def __init__(self, model: NGramModel, memo_size: int = 1 << 16) -> None:
        if not isinstance(model, NGramModel):
            raise TypeError(f"model: expected an NGramModel, got {type(model).__name__}")
        self.model = model
        self._ranked = lru_cache(maxsize=memo_size)(self._rank)

    def _rank(self, tail: tuple[int, ...]) -> tuple[int, ...]:
        p = self.model.next_distribution(tail)
        return tuple(np.argsort(-p, kind="stable").tolist())

    def ranked(self, context: list[int]) -> tuple[int, ...]:
        return self._ranked(tuple(context[len(context) - min(len(context), self.model.n - 1) :]))

    def fill(self, parents: list[int], children: list[list[int]], context: list[int], root: int) -> list[int]:
        """Tokens of every node: the root, then each node's children take its top candidates in order.

        Only the last n − 1 tokens of a path matter to the count model, so only those are kept.
        """
        keep = self.model.n - 1
        start = max(0, len(context) + 1 - keep)
        tokens, paths = [root] + [0] * (len(parents) - 1), {0: (context + [root])[start:]}
        for node in range(len(parents)):  # parents precede children
            if children[node]:
                ranked = self.ranked(paths[node])
                for rank, child in enumerate(children[node]):
                    tokens[child] = ranked[rank]
                    paths[child] = paths[node] + [ranked[rank]]
        return tokens


def verify_greedy_tree(tokens: list[int], children: list[list[int]], argmax: list[int]) -> tuple[list[int], int]:
    """(emitted tokens, last accepted node): walk from the root while a child holds its parent's argmax."""
    node, emitted = 0, []
    while True:
        match = [c for c in children[node] if tokens[c] == argmax[node]]
        if not match:
            return emitted + [argmax[node]], node
        node = match[0]
        emitted.append(tokens[node])


@torch.inference_mode()
def score_unrolled(model: SSDLM, tokens: list[int], parents: list[int], cache: SSDCache) -> torch.Tensor:
    """The naive baseline: every root-to-leaf path as its own sequence, all leaves as one batch.

    Each path starts from a copy of the committed state (one state per branch) and runs the
    chain form; a node shared by several paths is computed once per path. Returns logits (n, V),
    read from the first path through each node.
    """
    leaves = [u for u in range(len(parents)) if u not in set(parents)]
    paths = [root_path(parents, leaf) for leaf in leaves]
    depth = max(len(p) for p in paths)
    padded = [p + [p[-1]] * (depth - len(p)) for p in paths]  # a short path repeats its leaf (ignored)
    copies = SSDCache([c.expand(len(paths), -1, -1).clone() for c in cache.conv],
                      [h.expand(len(paths), -1, -1, -1).clone() for h in cache.ssm])
    logits = model(torch.tensor([[tokens[u] for u in p] for p in padded]), copies)
    out = torch.empty(len(parents), logits.shape[-1])
    for row, path in enumerate(paths):
        out[path] = logits[row, : len(path)]
    return out


@dataclass
class TreeStats:
    """Per target call: accepted drafts and seconds (drafting, the SSM call, verification, commit)."""

    accepted: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.accepted)

    def tokens_per_call(self) -> float:
        return float(np.mean(self.accepted) + 1) if self.accepted else float("nan")


def _check_prompt(prompt: torch.Tensor, max_new: int) -> None:
    check_tensor("prompt", prompt)
    check_dtype("prompt", prompt, (torch.long, torch.int32))
    check_ndim("prompt", prompt, "tokens")
    if prompt.shape[0] == 0:
        raise ValueError("prompt: expected at least one token, got 0")
    if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 0:
        raise ValueError(f"max_new: expected an int ≥ 0, got {max_new!r}")


def _prefill(model: SSDLM, prompt: torch.Tensor) -> SSDCache:
    """A cache holding every prompt token but the last (which the first call feeds)."""
    cache = model.new_cache(1)
    if prompt.shape[0] > 1:
        model(prompt[None, :-1], cache)
    return cache


@torch.inference_mode()
def greedy_generate(model: SSDLM, prompt: torch.Tensor, max_new: int) -> torch.Tensor:
    """Autoregressive greedy decoding with the recurrent state: one ``step`` per token → (T0 + max_new,)."""
    _check_prompt(prompt, max_new)
    cache, seq = _prefill(model, prompt), prompt.tolist()
    for _ in range(max_new):
        seq.append(int(model.step(torch.tensor(seq[-1:]), cache)[0].argmax()))
    return torch.tensor(seq, dtype=torch.long)


@torch.inference_mode()
def tree_speculative_generate(
    model: SSDLM, proposer: NGramProposer, prompt: torch.Tensor, *, branching: tuple[int, ...], max_new: int,
    stats: TreeStats | None = None,
) -> torch.Tensor:
    """Greedy decoding, one SSM call per round over a static draft tree → (T0 + max_new,).

    ``branching`` fixes the tree (:func:`static_tree`); (1,) * γ is chain speculative decoding.
    Equal to :func:`greedy_generate` token for token.
    """
    _check_prompt(prompt, max_new)
    parents = static_tree(branching)
    tree: Tree = make_tree(parents, model.config.d_conv)
    children = [[c for c, p in enumerate(parents) if p == node] for node in range(len(parents))]
    stats = stats if stats is not None else TreeStats()
    cache, seq = _prefill(model, prompt), prompt.tolist()
    while len(seq) < prompt.shape[0] + max_new:
        start = time.perf_counter()
        tokens = proposer.fill(parents, children, seq[:-1], seq[-1])
        logits, tree_pass = model.tree_forward(torch.tensor(tokens), tree, cache)
        emitted, leaf = verify_greedy_tree(tokens, children, logits.argmax(-1).tolist())
        model.commit(cache, tree_pass, leaf)
        seq.extend(emitted)
        stats.accepted.append(len(emitted) - 1)
        stats.seconds.append(time.perf_counter() - start)
    return torch.tensor(seq[: prompt.shape[0] + max_new], dtype=torch.long)
