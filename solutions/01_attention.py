# %% [markdown]
# # Chapter 01 exercises — the attention kernel
#
# Six small functions, one from each section of chapter 01: the inner loop of FlashAttention, the
# stable shift that keeps bf16 attention unbiased, Delta Attention's correction, key-value attention,
# a doubly stochastic normalizer and an attention-free causal mixer. Write the body of each function
# where it says `raise NotImplementedError(...)`, then run the cell below it: `check(...)` calls your
# function on seeded inputs and prints one line when every case passes, or says which case failed
# and why (the shape first, then the values).
#
# Everything is NumPy in float64. Keep the precision of the inputs, do not modify them in place, and
# do not import the reference implementations from `lib` — that is the answer.

# %%
import numpy as np


from lib.exercises import check

# %% [markdown]
# ## 01.1a — one step of FlashAttention's inner loop
#
# A query tile streams past the key tiles. For each query row it keeps a running maximum $m$, a
# running sum $\ell = \sum_j e^{s_j - m}$ and a running output $\mathrm{acc} = \sum_j e^{s_j - m} v_j$
# over the keys seen so far. Folding in a tile of scores $S$ (rows × n) and its values $V$ (n × dv):
#
# $$m' = \max\big(m, \max_j S_{\cdot j}\big),\quad \alpha = e^{m - m'},\quad \tilde P = e^{S - m'},\quad
# \ell' = \alpha\,\ell + \textstyle\sum_j \tilde P_{\cdot j},\quad \mathrm{acc}' = \alpha\,\mathrm{acc} + \tilde P V.$$
#
# After the last tile, $\mathrm{acc}/\ell$ is exactly $\mathrm{softmax}(s)\,V$. The state starts as
# $m = -\infty$, $\ell = 0$, $\mathrm{acc} = 0$. While a row has seen only $-\infty$ (masked keys),
# $m' = -\infty$ and $-\infty - (-\infty)$ is `nan`: use the shift 0 instead of $m'$ in both
# exponents there, so the state stays $(-\infty, 0, 0)$.

# %%
def online_softmax_step(
    m: np.ndarray, l: np.ndarray, acc: np.ndarray, s_tile: np.ndarray, v_tile: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold one key tile into the running (max, sum, output) state of every query row.

    m, l: (rows,); acc: (rows, dv); s_tile: (rows, n) scores, -inf where masked; v_tile: (n, dv)
    →  (m', l', acc') with the same shapes, float64.
    """
    # BEGIN SOLUTION
    m_new = np.maximum(m, s_tile.max(axis=-1))               # (rows,)
    shift = np.where(np.isneginf(m_new), 0.0, m_new)         # 0 while nothing finite was seen
    alpha = np.exp(m - shift)                                # rescales what was accumulated so far
    p = np.exp(s_tile - shift[:, None])                      # (rows, n), every exponent ≤ 0
    return m_new, alpha * l + p.sum(axis=-1), alpha[:, None] * acc + p @ v_tile
    # END SOLUTION


# %%
check("01.1a", online_softmax_step)


# %% [markdown]
# ## 01.2a — the stable-max shift
#
# In bf16, a tile row whose maximum $m$ is tied produces several $\tilde P = e^{s - m}$ equal to
# exactly 1, and the rounding of $\tilde P V$ becomes biased. The fix of section 01.2 shifts such a
# row by something other than $m$. With $t = \#\{j : s_j \ge m - \tau\}$ the number of near-maximal
# scores of the tile row,
#
# $$c_\text{tile} = \begin{cases} \beta\, m & t \ge 2,\ m > 0 \\ 0 & t \ge 2,\ m < 0 \\ m & \text{otherwise,}\end{cases}
# \qquad c = \max(c_\text{tile},\ c_\text{prev}).$$
#
# The running shift never decreases, so the online softmax stays exact. A row with no finite score
# in the tile has $m = -\infty$ and keeps $c_\text{tile} = -\infty$.

# %%
def stable_shift(s_tile: np.ndarray, m_prev: np.ndarray, beta: float, tau: float) -> np.ndarray:
    """The running shift after one tile with the stable max.

    s_tile: (rows, n) scores (-inf where masked); m_prev: (rows,) the previous shift  →  (rows,) float64.
    """
    # BEGIN SOLUTION
    m = s_tile.max(axis=-1)                                              # (rows,) tile row maximum
    tied = ((s_tile >= (m - tau)[:, None]).sum(axis=-1) >= 2) & np.isfinite(m)
    c_tile = np.where(tied & (m > 0), beta * m, np.where(tied & (m < 0), 0.0, m))
    return np.maximum(c_tile, m_prev)
    # END SOLUTION


# %%
check("01.2a", stable_shift)


# %% [markdown]
# ## 01.3a — Delta Attention's correction
#
# A sliding-window prefill gives outputs $O^{sp}_i$ for every row; exact attention was computed only
# for the representative rows $r_t = t\gamma$ (the first row of each block of $\gamma$ rows), giving
# $O^{dense}_t$. Delta Attention measures the gap there and adds it to the whole block:
#
# $$\Delta_t = O^{dense}_t - O^{sp}_{t\gamma}, \qquad O_i = O^{sp}_i + \Delta_{\lfloor i/\gamma \rfloor}.$$
#
# There are $\lceil N/\gamma \rceil$ blocks; when $\gamma$ does not divide $N$ the last block is
# shorter. At every representative row the result is the dense row itself. Work over the last two
# axes (rows, features); any leading axes (batch, heads) come along.

# %%
def delta_correct(o_sparse: np.ndarray, o_dense_rows: np.ndarray, gamma: int) -> np.ndarray:
    """Add to each block of γ rows the gap measured at its first row.

    o_sparse: (..., N, dv); o_dense_rows: (..., ⌈N/γ⌉, dv); gamma ≥ 1  →  o: (..., N, dv) float64.
    """
    # BEGIN SOLUTION
    n = o_sparse.shape[-2]
    delta = o_dense_rows - o_sparse[..., ::gamma, :]                # (..., ⌈N/γ⌉, dv): the gap at rows tγ
    return o_sparse + np.repeat(delta, gamma, axis=-2)[..., :n, :]  # block t gets Δ_t; trim the last block
    # END SOLUTION


# %%
check("01.3a", delta_correct)


# %% [markdown]
# ## 01.4a — key-value attention: the key plays the query
#
# The Key-Value Transformer (arXiv 2305.19129) drops the query projection and compares every
# token's key with every other token's key. For one head, with $x \in \mathbb{R}^{N \times d}$,
# $W_K \in \mathbb{R}^{d \times d_k}$ and $W_V \in \mathbb{R}^{d \times d_v}$:
#
# $$K = x W_K, \qquad V = x W_V, \qquad S = \frac{K K^\top}{\sqrt{d_k}}, \qquad
# \mathrm{out} = \mathrm{softmax}_{\text{row}}(S)\, V.$$
#
# Return the pair `(out, logits)` with `logits` $= S$ of shape $(N, N)$ — it is symmetric,
# $S_{ij} = S_{ji}$ — and `out` of shape $(N, d_v)$. Use a stable softmax (subtract each row's
# maximum): one case has logits above 700, where a plain `exp` overflows. Without any positional
# term the layer is permutation-equivariant, and the check verifies that too: shuffling the
# tokens shuffles `out`'s rows and both axes of `logits` the same way.

# %%
def kv_attention(x: np.ndarray, Wk: np.ndarray, Wv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Single-head key-value attention.

    x: (N, d), Wk: (d, d_k), Wv: (d, d_v) float64  →  out (N, d_v), logits (N, N) float64.
    """
    # BEGIN SOLUTION
    k = x @ Wk                                        # (N, d_k): keys, also used as queries
    logits = k @ k.T / np.sqrt(Wk.shape[1])           # (N, N), symmetric
    shifted = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    weights /= weights.sum(axis=1, keepdims=True)     # each row sums to 1
    return weights @ (x @ Wv), logits
    # END SOLUTION


# %%
check("01.4a", kv_attention)


# %% [markdown]
# ## 01.5a — doubly stochastic attention from a QR factorization
#
# Softmax makes each row of the attention matrix sum to 1. A *doubly stochastic* matrix has
# non-negative entries whose rows **and** columns sum to 1. The QR factorization gives one for free:
# write the logits as $S = QR$ with $Q$ orthogonal and $R$ upper triangular, and take the entrywise
# square
#
# $$A = Q \circ Q, \qquad A_{ij} = Q_{ij}^2 .$$
#
# The rows and the columns of an orthogonal matrix are unit vectors, so
# $\sum_j A_{ij} = \sum_i A_{ij} = 1$ exactly, and $A_{ij} \ge 0$. A QR routine may flip the sign
# of any column of $Q$ (and the matching row of $R$); $A$ does not see the signs. Work over the
# **last two** axes, so a stack of heads `(..., n, n)` is factorized matrix by matrix, and return
# float64.

# %%
def qr_doubly_stochastic(S: np.ndarray) -> np.ndarray:
    """The orthostochastic map A = Q ∘ Q, where S = Q R, for each matrix of a stack.

    S: (..., n, n) nonsingular float64  →  A: (..., n, n) float64, rows and columns summing to 1.
    """
    # BEGIN SOLUTION
    Q, _ = np.linalg.qr(S)          # (..., n, n); NumPy factorizes every matrix of the stack
    return Q * Q                    # column signs of Q cancel in the square
    # END SOLUTION


# %%
check("01.5a", qr_doubly_stochastic)


# %% [markdown]
# ## 01.6a — a causal min activation
#
# Section 01.6 replaces attention by a parameter-free operation that compares each position with
# the one before it. For a batch of sequences $x \in \mathbb{R}^{B \times T \times D}$, take the
# elementwise minimum of each vector and its predecessor along the sequence axis $T$:
#
# $$y_t = \min(x_t, x_{t-1}), \qquad x_0 := x_1,$$
#
# so the first position is paired with itself ($y_1 = x_1$). The result must be **causal**: $y_t$
# may depend on $x_1, \dots, x_t$ only. The checker changes the future and verifies that the past
# does not move. Beware of `np.roll`, which wraps the last position around to the first.

# %%
def causal_min_activation(x: np.ndarray) -> np.ndarray:
    """y_t = min(x_t, x_{t-1}) along axis 1, with x_0 := x_1.

    x: (B, T, D) float64  →  y: (B, T, D) float64.
    """
    # BEGIN SOLUTION
    previous = np.concatenate([x[:, :1], x[:, :-1]], axis=1)   # (B, T, D): x_{t-1}, the first row repeated
    return np.minimum(x, previous)
    # END SOLUTION


# %%
check("01.6a", causal_min_activation)
