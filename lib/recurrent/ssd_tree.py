"""Mamba-2's SSM on a token tree (STree, Wu, Qin, Wong & Soatto, arXiv 2505.14969).

A draft tree is given by ``parents``: ``parents[u]`` is the index of u's parent and −1 marks the
one root, which follows the committed text. Every node's output must be what the recurrence gives
along *its own* root path, started from the committed state ``h_0``. Because each head's decay is
a scalar, the decay between two nodes of one path is a difference of cumulative log-decays taken
along parents::

    cum(u) = cum(π(u)) + log_a_u,  cum(π(root)) = 0
    y_u = exp(cum(u)) C_uᵀ h_0 + Σ_{s ∈ anc*(u)} exp(cum(u) − cum(s)) (C_u · B_s) x_s

anc*(u) = u and its ancestors: the chain's causal mask becomes the ancestor mask, and the whole
tree is scored by :func:`lib.recurrent.ssd.ssd_mask_form` in one call. When the path ending at
ℓ is accepted, its state is row ℓ of the same form (:func:`lib.recurrent.ssd.path_state`): no
state per branch is ever materialised. The width-W causal convolution in front of the SSM reads
its window along the ancestor chain too (:func:`parent_chain_table`, :func:`tree_conv`).

NumPy references take one tree: x (n, H, P), log_a (n, H), B and C (n, N), h0 (H, N, P).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lib.recurrent.ssd import _zero_state, path_state, ssd_mask_form, ssd_scan_ref

__all__ = [
    "Tree",
    "accepted_state",
    "accepted_state_ref",
    "ancestor_mask",
    "check_parents",
    "make_tree",
    "parent_chain_table",
    "root_path",
    "ssd_tree",
    "ssd_tree_bruteforce",
    "ssd_tree_masked_ref",
    "tree_conv",
    "tree_conv_ref",
    "tree_cumsum",
    "tree_from_parents",
]


def check_parents(parents: Any) -> np.ndarray:
    """``parents`` as int64 (n,) after checking it is one tree: a single −1 root, no cycle, no dangling index."""
    array = np.asarray(parents)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"parents: expected a non-empty 1-d sequence of ints, got {array.dtype} of shape {array.shape}")
    array = array.astype(np.int64)
    n = array.size
    if array.min() < -1 or array.max() >= n or np.any(array == np.arange(n)):
        raise ValueError(f"parents: expected values in [-1, {n}) with no node its own parent, got {array.tolist()}")
    if np.count_nonzero(array == -1) != 1:
        raise ValueError(f"parents: expected exactly one root (one −1), got {np.count_nonzero(array == -1)}")
    for u in range(n):  # every walk must reach the root within n steps
        v, steps = u, 0
        while v != -1 and steps <= n:
            v, steps = array[v], steps + 1
        if v != -1:
            raise ValueError(f"parents: node {u} never reaches the root (a cycle)")
    return array


def root_path(parents: Any, node: int) -> list[int]:
    """The nodes from the root down to ``node``, both included."""
    parents = check_parents(parents)
    path = [node]
    while parents[path[-1]] != -1:
        path.append(int(parents[path[-1]]))
    return path[::-1]


# ----------------------------------------------------------------------------- NumPy references


def tree_from_parents(parents: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anc_mask (n, n) bool, depth (n,), order (n,)) by walking every node's root path.

    ``anc_mask[u, s]`` is True when s is u or an ancestor of u; ``depth`` counts edges from the
    root (root: 0); ``order`` lists the nodes level by level (a stable sort by depth), an order in
    which every parent comes before its children.
    """
    parents = check_parents(parents)
    n = parents.size
    anc = np.zeros((n, n), dtype=bool)
    depth = np.zeros(n, dtype=np.int64)
    for u in range(n):
        path = root_path(parents, u)
        anc[u, path] = True
        depth[u] = len(path) - 1
    return anc, depth, np.argsort(depth, kind="stable")


def ssd_tree_bruteforce(
    x: np.ndarray, log_a: np.ndarray, B: np.ndarray, C: np.ndarray, parents: Any, h0: np.ndarray | None = None
) -> np.ndarray:
    """The ground truth: for every node, run the recurrence along its root path from h0. y (n, H, P)."""
    y = np.zeros(x.shape)
    for u in range(len(x)):
        path = root_path(parents, u)
        y[u] = ssd_scan_ref(x[path], log_a[path], B[path], C[path], h0)[0][-1]
    return y


def ssd_tree_masked_ref(
    x: np.ndarray, log_a: np.ndarray, B: np.ndarray, C: np.ndarray, parents: Any, h0: np.ndarray | None = None
) -> np.ndarray:
    """The tree mask form, entry by entry: cum along parents, then L_tree on the ancestor mask. y (n, H, P)."""
    anc, _, order = tree_from_parents(parents)
    parents = check_parents(parents)
    h0 = _zero_state(x, B, h0)
    cum = np.zeros(log_a.shape)
    for u in order:  # parents first
        cum[u] = (cum[parents[u]] if parents[u] >= 0 else 0.0) + log_a[u]
    y = np.zeros(x.shape)
    for u in range(len(x)):
        for head in range(x.shape[1]):
            y[u, head] = np.exp(cum[u, head]) * (C[u] @ h0[head])
            for s in np.flatnonzero(anc[u]):
                y[u, head] += np.exp(cum[u, head] - cum[s, head]) * (C[u] @ B[s]) * x[s, head]
    return y


def accepted_state_ref(
    x: np.ndarray, log_a: np.ndarray, B: np.ndarray, parents: Any, leaf: int, h0: np.ndarray | None = None
) -> np.ndarray:
    """The state after accepting the root path of ``leaf``, from the closed form: (H, N, P).

    ``h = exp(cum(ℓ)) h_0 + Σ_{s ∈ path} exp(cum(ℓ) − cum(s)) B_s x_sᵀ`` with cum summed along the path.
    """
    path = root_path(parents, leaf)
    h = np.exp(log_a[path].sum(0))[:, None, None] * _zero_state(x, B, h0)
    for i, s in enumerate(path):
        decay = np.exp(log_a[path[i + 1 :]].sum(0))  # (H,): the decays after s up to ℓ
        h += decay[:, None, None] * np.einsum("n,hp->hnp", B[s], x[s])
    return h


def tree_conv_ref(
    u: np.ndarray, parents: Any, state: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """The causal convolution along each node's own path: u (n, D), state (W − 1, D) → (n, D).

    Node u's window is the W − 1 inputs before it on its path (committed inputs from ``state``
    where the path is shorter) followed by u itself.
    """
    out = np.zeros(u.shape)
    for node in range(len(u)):
        path = root_path(parents, node)
        seq = np.concatenate([state, u[path]])
        out[node] = bias + (weight * seq[-weight.shape[1] :].T).sum(1)
    return out


# ----------------------------------------------------------------------------- torch


@dataclass(frozen=True)
class Tree:
    """Everything about a tree's *shape* that a pass needs, built once per static tree.

    parents (n,) long, anc (n, n) bool ancestor-or-self mask, depth (n,) long, conv_table
    (n, W) long (see :func:`parent_chain_table`).
    """

    parents: torch.Tensor
    anc: torch.Tensor
    depth: torch.Tensor
    conv_table: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.parents.shape[0])


def _ancestor_steps(parents: torch.Tensor, steps: int) -> torch.Tensor:
    """(steps + 1, n): row k is each node's k-th ancestor, continuing past the root as −1, −2, …

    Past the root the index counts committed tokens backwards: −1 is the last committed one.
    One vectorised gather per step (pointer chasing), no Python loop over nodes.
    """
    current = torch.arange(parents.shape[0])
    rows = [current]
    for _ in range(steps):
        current = torch.where(current >= 0, parents[current.clamp(min=0)], current - 1)
        rows.append(current)
    return torch.stack(rows)


def ancestor_mask(parents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(anc (n, n) bool, depth (n,)): ancestor-or-self mask and depth, by n − 1 gathers along parents."""
    n = parents.shape[0]
    steps = _ancestor_steps(parents, n - 1)  # (n, n): a path has at most n nodes
    anc = torch.zeros(n, n, dtype=torch.bool)
    valid = steps >= 0
    anc[torch.arange(n)[:, None].expand(n, n)[valid.T], steps.T[valid.T]] = True
    return anc, valid.sum(0) - 1


def parent_chain_table(parents: torch.Tensor, width: int = 4) -> torch.Tensor:
    """(n, width) indices of each node's convolution window into ``[state (width − 1) ; nodes (n)]``.

    Column width − 1 is the node, column width − 1 − k its k-th ancestor; where the path runs out,
    the committed inputs follow (the k-th step past the root is state row width − 1 − (k − depth)).
    """
    steps = _ancestor_steps(parents, width - 1)  # (width, n), node k-th ancestor or −j past the root
    return (steps + (width - 1)).flip(0).T.contiguous()


def make_tree(parents: Any, conv_width: int = 4) -> Tree:
    """Check ``parents`` and precompute its mask, depths and convolution table."""
    parents = torch.as_tensor(check_parents(parents))
    anc, depth = ancestor_mask(parents)
    return Tree(parents, anc, depth, parent_chain_table(parents, conv_width))


def tree_cumsum(log_a: torch.Tensor, tree: Tree) -> torch.Tensor:
    """cum (b, n, H) with cum(u) = cum(π(u)) + log_a_u, by one gather per tree level.

    Iterating ``cum ← log_a + cum[parents]`` (cum of the root's parent is 0) makes every node of
    depth < k exact after k rounds, so depth + 1 rounds finish; each node's sum is formed in path
    order, exactly as the recurrence would.
    """
    parent = tree.parents.clamp(min=0)
    has_parent = (tree.parents >= 0)[None, :, None]
    cum = log_a
    for _ in range(int(tree.depth.max())):
        cum = log_a + torch.where(has_parent, cum[:, parent], 0.0)
    return cum


def ssd_tree(
    x: torch.Tensor, log_a: torch.Tensor, B: torch.Tensor, C: torch.Tensor, tree: Tree,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score a whole tree in one pass: (y (b, n, H, P), cum (b, n, H)); cum is kept for the commit."""
    cum = tree_cumsum(log_a, tree)
    return ssd_mask_form(x, cum, B, C, tree.anc, h0), cum


def accepted_state(
    x: torch.Tensor, cum: torch.Tensor, B: torch.Tensor, tree: Tree, leaf: int, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """The state (b, H, N, P) after the root path of ``leaf``, formed directly from the tree pass."""
    return path_state(x, cum, B, tree.anc[leaf], leaf, h0)


def tree_conv(
    u: torch.Tensor, tree: Tree, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """The causal convolution on a tree: u (b, n, D), state (b, W − 1, D) → (b, n, D).

    One gather builds every node's window from ``[state ; u]`` through ``tree.conv_table``; then a
    weighted sum over the window. weight (D, W), bias (D,).
    """
    windows = torch.cat([state, u], dim=1)[:, tree.conv_table]  # (b, n, W, D)
    return torch.einsum("bnwd,dw->bnd", windows, weight) + bias
