"""Check for section 07.6 (tree verification for SSMs): cumulative log-decays along a draft tree.

The student's ``tree_cumulative_decay(log_a, parents) -> cum`` must give, for every node u,
``cum[u] = Σ log_a over u's root path`` (u included), for log_a of shape (n,) or (n, H). The
checker compares with a brute-force walk from each node up to the root on seeded random trees,
including trees whose nodes are not numbered parents-first, a chain, a star and a single node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from lib.exercises.cases import call_fresh, expect_array, expect_close
from lib.exercises.registry import register
from lib.recurrent.ssd_tree import root_path

__all__ = ["check_tree_cumulative_decay", "cumulative_decay_by_walks", "tree_cases"]


def cumulative_decay_by_walks(log_a: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """The brute force: for each node, add log_a along the walk from it to the root."""
    return np.stack([log_a[root_path(parents, u)].sum(0) for u in range(len(parents))])


def _random_parents(rng: np.random.Generator, n: int, shuffle: bool) -> np.ndarray:
    """A random tree: node i > 0 hangs under a random earlier node; optionally relabelled at random."""
    parents = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n)])
    if not shuffle:
        return parents
    perm = rng.permutation(n)  # new label of old node i is perm[i]
    relabelled = np.empty(n, dtype=np.int64)
    relabelled[perm] = np.where(parents >= 0, perm[np.maximum(parents, 0)], -1)
    return relabelled


def tree_cases() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(description, log_a, parents): seeded random trees and three shapes worth naming."""
    rng = np.random.default_rng(76)
    yield "a single node (the root alone)", -rng.uniform(0, 1, size=1), np.array([-1])
    yield "a chain of 6 (cum is a prefix sum)", -rng.uniform(0, 1, size=6), np.arange(-1, 5)
    yield "a star: root 2 with 5 children", -rng.uniform(0, 1, size=(6, 3)), np.array([2, 2, -1, 2, 2, 2])
    for i, (n, heads, shuffle) in enumerate([(9, None, False), (16, 4, False), (12, 2, True), (25, None, True)]):
        shape = (n,) if heads is None else (n, heads)
        what = "nodes numbered at random" if shuffle else "parents before children"
        yield f"random tree {i + 1}: {n} nodes, log_a {shape}, {what}", -rng.uniform(0, 2, size=shape), \
            _random_parents(rng, n, shuffle)


@register(
    "07.6a",
    function="tree_cumulative_decay",
    points=2,
    summary="Cumulative log-decays along a draft tree's parents (the tree form of SSD's segment sums)",
)
def check_tree_cumulative_decay(fn: Callable) -> int:
    """Compare ``fn`` with brute-force root-path walks on seven seeded trees."""
    cases = list(tree_cases())
    for i, (what, log_a, parents) in enumerate(cases, 1):
        case = f"case {i} of {len(cases)} — {what}"
        got = expect_array(case, "cum", call_fresh(fn, log_a, parents), log_a.shape)
        expect_close(case, "cum", got, cumulative_decay_by_walks(log_a, parents), atol=1e-12, rtol=1e-12,
                     reason="sums of at most 25 float64 numbers of size ≤ 2, in any order: rounding ~1e-14")
    return len(cases)
