# %% [markdown]
# # Chapter 07 exercises — faster decoding
#
# Small functions from the sections of chapter 07: the speculative-decoding step with its randomness
# passed in, the law of the number of accepted drafts, Jacobi decoding of a toy chain, the greedy
# verification of lookahead decoding, CTC's collapse map, cumulative decays along a draft tree, and
# the cyclical mask of direct multi-token decoding. Write the body of each function where it says
# `raise NotImplementedError(...)`, then run the cell below it: `check(...)` calls your function on
# seeded inputs and prints one line when every case passes, or says which case failed and why.
#
# Everything is NumPy (or plain Python). Do not modify the inputs in place, and do not import the
# reference implementations from `lib` — that is the answer.

# %%
import numpy as np

from lib.exercises import check

# %% [markdown]
# ## 07.1a — one round of speculative decoding
#
# The draft proposed $\tilde x_1..\tilde x_\gamma$, drawn from its rows $q_1..q_\gamma$
# (`q_rows`, shape (γ, V)), and one target call scored $p_1..p_{\gamma+1}$ (`p_rows`, shape
# (γ + 1, V)). All random numbers are given: `uniforms` (γ,) and one more, `u_resid`.
#
# 1. For $i = 1..\gamma$ in order, accept $\tilde x_i$ iff $r_i < p_i(\tilde x_i) / q_i(\tilde x_i)$
#    (divide; $q_i(\tilde x_i) > 0$ because the draft sampled it). Stop at the first rejection.
# 2. After a rejection at position $i$, emit one token from the residual
#    $w = \max(p_i - q_i, 0)$; if its mass is below $10^{-12}$ (p = q numerically) use $w = p_i$.
#    If all γ drafts were accepted, emit the bonus token from $w = p_{\gamma+1}$.
# 3. Draw from $w$ with `u_resid` by the inverse CDF: with `cdf = np.cumsum(w)`, the token is the
#    smallest $x$ with `cdf[x] > u_resid * cdf[-1]`, which is
#    `np.searchsorted(cdf, u_resid * cdf[-1], side="right")`. If rounding pushes that index past the
#    end, take the last token with $w > 0$.
#
# Return the accepted drafts followed by that one token, as a list of ints (1 to γ + 1 of them).
# The exactness proof of section 07.1 says the first token has law $p_1$ whatever $q$ is; the
# check tests that with a chi-square test, besides comparing your tokens with the reference.

# %%
def speculative_step(
    p_rows: np.ndarray, q_rows: np.ndarray, drafts: np.ndarray, uniforms: np.ndarray, u_resid: float
) -> list[int]:
    """One verification round: the accepted drafts, then one residual or bonus token.

    p_rows (γ+1, V), q_rows (γ, V) float64 rows summing to 1; drafts (γ,) ints; uniforms (γ,) and
    u_resid in [0, 1)  →  list of 1 to γ + 1 ints.
    """
    # BEGIN SOLUTION
    def inverse_cdf(w: np.ndarray, u: float) -> int:
        cdf = np.cumsum(w)                                       # (V,)
        x = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
        return x if x < len(w) else int(np.flatnonzero(w)[-1])

    emitted = []
    for i, x in enumerate(drafts):
        if uniforms[i] < p_rows[i, x] / q_rows[i, x]:            # accept with probability min(1, p/q)
            emitted.append(int(x))
            continue
        w = np.maximum(p_rows[i] - q_rows[i], 0.0)               # the residual (p − q)_+
        if np.cumsum(w)[-1] < 1e-12:
            w = p_rows[i]
        return emitted + [inverse_cdf(w, u_resid)]
    return emitted + [inverse_cdf(p_rows[len(drafts)], u_resid)]  # all accepted: the bonus token
    # END SOLUTION


# %%
check("07.1a", speculative_step)


# %% [markdown]
# ## 07.2a — how many drafts does a round accept?
#
# In one round of speculative sampling the draft proposes γ tokens and the target keeps them in
# order, stopping at the first rejection. Suppose position $i$ is accepted with probability
# $\beta_i = \sum_x \min(p_i(x), q_i(x))$, independently of the others. The number of accepted
# drafts $N \in \{0, \dots, \gamma\}$ then has the law
#
# $$P(N = k) = \Big(\prod_{i \le k} \beta_i\Big)(1 - \beta_{k+1}) \quad (k < \gamma), \qquad
#   P(N = \gamma) = \prod_{i \le \gamma} \beta_i .$$
#
# `betas` is either an array of shape (γ,) or a single number α used for every position (the
# i.i.d. model behind the speed-up formula). Return the law as a float64 array of shape (γ + 1,);
# it must sum to 1. The check compares it with hand-computed laws and with a simulation of 20 000
# rounds (a chi-square test).

# %%
def acceptance_length_law(betas, gamma: int) -> np.ndarray:
    """P(N = k) for k = 0..γ, shape (γ + 1,) float64; betas (γ,) or one number."""
    # BEGIN SOLUTION
    betas = np.broadcast_to(np.asarray(betas, dtype=np.float64), (gamma,))
    reach = np.concatenate([[1.0], np.cumprod(betas)])      # (γ+1,) P(N ≥ k): the first k accepted
    stop = np.concatenate([1.0 - betas, [1.0]])             # (γ+1,) rejected next, or nothing left
    return reach * stop
    # END SOLUTION


# %%
check("07.2a", acceptance_length_law)


# %% [markdown]
# ## 07.3a — Jacobi decoding of one block
#
# Greedy decoding of `block_size` tokens $y_1..y_b$ after `prefix` $x$ solves the triangular system
#
# $$y_i = \arg\max_v p(v \mid x, y_{<i}), \qquad i = 1..b.$$
#
# `step_fn(seq)` is one forward pass: for a 1-D int array `seq` it returns the argmaxes at every
# position, `out[t]` $= \arg\max_v p(v \mid$ `seq[:t+1]`$)$. Solve the system by **Jacobi
# iteration**: start from the guess $y^{(0)} = [0, \dots, 0]$ and, in each iteration, call
# `step_fn` **once** on `[prefix ; y^(k)]` and update every unknown at once,
#
# $$y_i^{(k+1)} = \arg\max_v p(v \mid x, y^{(k)}_{<i}) \quad\text{(read at position } L - 1 + i - 1 \text{ of the output, } L = \text{len(prefix))}.$$
#
# Stop when an iteration changes nothing, or after `block_size` iterations: by then the first
# $k$ tokens are exact after $k$ iterations, so the whole block is. Return `(tokens, n_iters)`:
# the $b$ tokens and the number of iterations (= calls of `step_fn`). Do **not** update a token
# with values computed in the same iteration (that would be Gauss–Seidel, one call per token).

# %%
def jacobi_decode(step_fn, prefix: np.ndarray, block_size: int) -> tuple[np.ndarray, int]:
    """Jacobi iteration for one block: the greedy tokens and the number of forward passes.

    step_fn: (T,) ints → (T,) argmax ints; prefix (L,) ints  →  (tokens (block_size,) ints, n_iters ≤ block_size).
    """
    # BEGIN SOLUTION
    L = len(prefix)
    block = np.zeros(block_size, dtype=np.int64)                    # y⁽⁰⁾: the pad guess
    for k in range(1, block_size + 1):
        out = step_fn(np.concatenate([prefix, block]))              # (L + b,) one forward pass
        new = out[L - 1 : L - 1 + block_size]                       # y_i reads the row before it
        if np.array_equal(new, block) or k == block_size:           # a fixed point, or exact by the bound
            return new, k
        block = new
    # END SOLUTION


# %%
check("07.3a", jacobi_decode)


# %% [markdown]
# ## 07.4a — greedy verification of lookahead candidates
#
# In one lookahead step the model also scored $G$ candidate continuations of the last committed
# token $c$: `candidates` (G, N − 1), each an n-gram from the pool without its first token.
# `target_argmax` (G, N) holds the model's argmaxes: column 0 is the argmax after $c$ (the same
# in every row), column $j + 1$ the argmax after candidate token $(g, j)$, given $c$ and the
# candidate's earlier tokens.
#
# Candidate $g$ is right up to position $j$ as long as every token equals the argmax before it:
# keep the longest prefix with
#
# $$\text{cand}[g, j] = \text{target\_argmax}[g, j], \qquad j = 0, 1, \dots$$
#
# (stop at the first mismatch). Take the candidate with the most kept tokens (the first one on
# a tie) and return its kept tokens **plus** the argmax that follows them,
# `target_argmax[g, kept]`, which is exact for free: 1 to N tokens, as a list of ints.

# %%
def verify_greedy(candidates: np.ndarray, target_argmax: np.ndarray) -> list[int]:
    """The tokens one lookahead step emits under greedy decoding.

    candidates (G, N − 1) ints, target_argmax (G, N) ints  →  list of 1 … N ints.
    """
    # BEGIN SOLUTION
    matches = candidates == target_argmax[:, :-1]            # (G, N − 1)
    kept = np.cumprod(matches, axis=1).sum(axis=1)           # leading matches per candidate
    best = int(np.argmax(kept))                              # the first longest
    n = int(kept[best])
    return [int(t) for t in candidates[best, :n]] + [int(target_argmax[best, n])]
    # END SOLUTION


# %%
check("07.4a", verify_greedy)


# %% [markdown]
# ## 07.5a — CTC's collapse: from frame labels to text
#
# A CTC head labels every frame of the input with a character or with the special **blank**
# ("no new character here"). Best-path decoding takes the most likely label of each frame, which
# gives a path such as `h h _ e _ l l _ l o o`, and maps it to text with CTC's collapse map
# $\mathcal{B}$:
#
# 1. merge every run of equal consecutive labels into one label (`l l` → `l`);
# 2. then drop the blanks.
#
# The order matters: `l l _ l` becomes `l _ l` and then `l l` — a blank between two equal labels
# is how CTC writes a doubled letter. Write `ctc_collapse(ids, blank)` that takes the frame
# labels (a list of ints, possibly empty) and the blank's id, and returns the collapsed labels as
# a list of ints. The blank is not always 0.

# %%
def ctc_collapse(ids: list[int], blank: int) -> list[int]:
    """CTC's many-to-one map: merge runs of equal labels, then drop blanks. (S,) ints → (L,) ints."""
    # BEGIN SOLUTION
    out, previous = [], None
    for label in ids:
        if label != previous and label != blank:   # a new run that is not a blank
            out.append(label)
        previous = label                           # a blank also ends a run
    return out
    # END SOLUTION


# %%
check("07.5a", ctc_collapse)


# %% [markdown]
# ## 07.6a — cumulative decays along a draft tree
#
# In Mamba-2 each head forgets with one scalar per token, $h_t = a_t h_{t-1} + B_t x_t^\top$. On a
# chain, the decay between positions $s \le t$ is $\exp(\mathrm{cum}_t - \mathrm{cum}_s)$ with the
# prefix sum $\mathrm{cum}_t = \sum_{r \le t} \log a_r$. On a **draft tree** every node continues its
# own root path, so the prefix sum runs along parents instead:
#
# $$\mathrm{cum}(u) = \mathrm{cum}(\pi(u)) + \log a_u, \qquad \mathrm{cum}(\pi(\text{root})) = 0.$$
#
# `parents[u]` is the index of $u$'s parent and $-1$ marks the one root. Nodes are **not**
# necessarily numbered parents-first (a parent may have a larger index than its child).
# `log_a` has shape `(n,)` or `(n, H)` (one column per head); return `cum` of the same shape,
# float64. Any correct method is fine: walking up from each node, a memo, or repeating
# `cum = log_a + cum[parents]` (with 0 for the root's parent) until nothing changes.

# %%
def tree_cumulative_decay(log_a: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """cum[u] = Σ log_a over the root path of u, u included.

    log_a (n,) or (n, H) float64; parents (n,) ints with one −1 (the root)  →  cum, the shape of log_a.
    """
    # BEGIN SOLUTION
    cum = np.zeros_like(log_a, dtype=np.float64)
    has_parent = parents >= 0
    for _ in range(len(parents)):                      # depth ≤ n − 1: n rounds always suffice
        from_parent = np.where(has_parent.reshape((-1,) + (1,) * (log_a.ndim - 1)),
                               cum[np.maximum(parents, 0)], 0.0)
        new = log_a + from_parent                      # nodes of depth < k are exact after k rounds
        if np.array_equal(new, cum):
            break
        cum = new
    return cum
    # END SOLUTION


# %%
check("07.6a", tree_cumulative_decay)


# %% [markdown]
# ## 07.7a — the cyclical mask of Direct Multi-Token Decoding
#
# DMTD decodes in cycles of $\tau$ tokens. Positions $0, \tau, 2\tau, \dots$ are **anchors**: there
# the whole network runs, so the early and middle layers see the context up to the anchor. At the
# $\tau - 1$ positions after an anchor only the late layers run, so the prediction there may use
# the deep (early/middle-layer) state of the positions **up to its cycle's anchor** and no later:
#
# $$C[t, s] = \big(s \le a(t)\big), \qquad a(t) = \tau \left\lfloor t / \tau \right\rfloor .$$
#
# Write `cyclical_mask(T, tau)` returning this $(T, T)$ **boolean** NumPy array (row $t$ = the
# position that predicts, column $s$ = the position whose deep state it may use). Example, $T = 5$,
# $\tau = 2$: rows 0 and 1 may use column 0 only, rows 2 and 3 columns 0–2, row 4 columns 0–4.
# Check yourself: the mask is lower triangular (no position uses the future), and for $\tau = 1$
# it is the ordinary causal mask.

# %%
def cyclical_mask(T: int, tau: int) -> np.ndarray:
    """DMTD's cyclical mask: C[t, s] = s ≤ τ·⌊t/τ⌋.

    T ≥ 1 positions, cycle length τ ≥ 1  →  (T, T) bool array.
    """
    # BEGIN SOLUTION
    t = np.arange(T)
    anchor = t - t % tau                        # (T,) the cycle's anchor of every row
    return t[None, :] <= anchor[:, None]        # (T, T) column s ≤ anchor of row t
    # END SOLUTION


# %%
check("07.7a", cyclical_mask)
