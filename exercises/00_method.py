# Generated from solutions/00_method.py by `python -m lib.exercises generate`: maintainers edit that file, not this one.
# Students: write each function where it raises NotImplementedError, then run the check cell below it.

# %% [markdown]
# # Chapter 00 exercises — the method
#
# Four small functions, each the heart of a section of chapter 00. Write the body of each
# function where it says `raise NotImplementedError(...)`, then run the cell below it:
# `check(...)` calls your function on seeded inputs and prints one line when every case
# passes, or says which case failed and why (the shape first, then the values).
#
# Everything is NumPy in float64. Keep the precision of the inputs, do not modify them in
# place, and do not import the reference implementations from `lib` — that is the answer.

# %%
import numpy as np

from lib.exercises import check

# %% [markdown]
# ## 00.1a — a stable softmax over rows
#
# For a row $x \in \mathbb{R}^n$ with maximum $m = \max_k x_k$,
#
# $$\mathrm{softmax}(x)_j = \frac{e^{x_j - m}}{\sum_k e^{x_k - m}}.$$
#
# Subtracting $m$ changes nothing mathematically but keeps every exponent $\le 0$, so logits
# around $\pm 10^4$ neither overflow nor vanish. A row that is entirely $-\infty$ (fully masked)
# has no distribution: return zeros for it, not `nan`. Work over the **last** axis of an array
# of any number of dimensions.

# %%
def softmax_rows(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, stable for large logits; all -inf rows give zeros.

    x: (..., n) float64, -inf allowed  →  (..., n) float64.
    """
    raise NotImplementedError("Exercise 00.1a: write the body of softmax_rows")


# %%
check("00.1a", softmax_rows)

# %% [markdown]
# ## 00.1b — the backward pass of softmax
#
# With $y = \mathrm{softmax}(x)$ and an upstream gradient $dy = \partial L / \partial y$, the
# Jacobian $\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)$ gives the vector-Jacobian product
#
# $$dx = y \odot \left(dy - \langle y, dy\rangle\right),$$
#
# one inner product per row. It needs $y$ only, never $x$; a masked row ($y = 0$) gets $dx = 0$.

# %%
def softmax_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Vector-Jacobian product of softmax over the last axis.

    y: (..., n) softmax output, dy: (..., n) upstream gradient  →  dx: (..., n) float64.
    """
    raise NotImplementedError("Exercise 00.1b: write the body of softmax_backward")


# %%
check("00.1b", softmax_backward)

# %% [markdown]
# ## 00.2a — fold one block into the online-softmax state
#
# Reading a row block by block, keep the running maximum $m$ and the running sum
# $\ell = \sum e^{x - m}$ of what has been seen. Folding in a block $b$:
#
# $$m' = \max\big(m, \max_j b_j\big), \qquad \ell' = \ell\, e^{m - m'} + \sum_j e^{b_j - m'}.$$
#
# The state starts as $m = -\infty$, $\ell = 0$. While a row has seen only $-\infty$, $m' = -\infty$
# and $-\infty - (-\infty)$ is `nan`: shift by 0 instead of $m'$ there, so the state stays $(-\infty, 0)$.

# %%
def online_update(m: np.ndarray, l: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold one block of every row into the running (max, sum of exp) state.

    m, l: (rows,) float64;  block: (rows, b) float64, -inf allowed  →  (m', l'), each (rows,).
    """
    raise NotImplementedError("Exercise 00.2a: write the body of online_update")


# %%
check("00.2a", online_update)

# %% [markdown]
# ## 00.2b — merge two partial states
#
# Two programs that each read part of a row hold states $(m_a, \ell_a)$ and $(m_b, \ell_b)$.
# Their union is
#
# $$m = \max(m_a, m_b), \qquad \ell = \ell_a e^{m_a - m} + \ell_b e^{m_b - m}.$$
#
# This merge is associative (so parts can be combined in any grouping) and the empty state
# $(-\infty, 0)$ is its identity: merging with it must change nothing, with no `nan`.

# %%
def merge_states(
    m_a: np.ndarray, l_a: np.ndarray, m_b: np.ndarray, l_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Combine two partial (max, sum of exp) states of the same rows.

    m_a, l_a, m_b, l_b: (rows,) float64  →  (m, l), each (rows,).
    """
    raise NotImplementedError("Exercise 00.2b: write the body of merge_states")


# %%
check("00.2b", merge_states)
