# %% [markdown]
# # 00.2 Online softmax
#
# The fused kernel of section 00.1 holds a whole row in registers, and so it stops working once a
# row is longer than a few thousand elements. Attention is exactly that case: a query's row of
# scores is as long as the sequence, and FlashAttention never even materialises it. This section
# shows how to compute a softmax while *streaming* a row block by block, after Milakov and
# Gimelshein, *Online normalizer calculation for softmax* (arXiv 1805.02867, 2018). The recurrence
# it introduces is the core of every FlashAttention kernel in chapter 01.

# %%
import kernels  # noqa: F401  first: on a machine without a GPU it switches Triton to its CPU interpreter

import matplotlib.pyplot as plt
import torch

import kernels.online_softmax as streaming
import lib
from lib.agreement import rel_rms_error
from lib.benchmarks.softmax import online_softmax_table
from lib.online_softmax import (
    merge_states,
    online_softmax,
    online_softmax_torch,
    online_update,
    reference_merge_states,
    reference_online_softmax,
    reference_online_update,
)
from lib.softmax import reference_softmax, sample_logits, softmax_torch
from lib.testing import nan_like

rng = lib.seed_everything(0)  # seeds Python, NumPy and torch; returns a NumPy Generator

# %% [markdown]
# ## Idea
#
# The safe softmax of 00.1 needs the row maximum $m$ before it can take a single exponential. If the
# row does not fit in fast memory it must therefore be read three times — once for $m$, once for
# $l = \sum_k e^{x_k - m}$, once to write $y_j = e^{x_j - m}/l$ — plus one write: four memory
# accesses per element.
#
# The online version keeps a *state* $(m, l)$ for the prefix of the row read so far: the largest
# value seen and the sum of exponentials **relative to that value**. Reading a new block $b$:
#
# $$m' = \max\bigl(m, \max_j b_j\bigr), \qquad l' = l\, e^{m - m'} + \sum_j e^{b_j - m'}.$$
#
# *Why it is exact.* Suppose $l = \sum_{k \in \text{seen}} e^{x_k - m}$. Multiplying by
# $e^{m - m'}$ re-expresses every seen term relative to the new maximum,
# $l\,e^{m - m'} = \sum_{k \in \text{seen}} e^{x_k - m'}$, and adding the block's own terms gives
# $l' = \sum_{k \in \text{seen} \cup b} e^{x_k - m'}$: the invariant holds again. The factor
# $e^{m - m'} \le 1$ and every new exponent is $\le 0$, so nothing overflows. After the last block
# $(m, l)$ is exactly the pair the safe softmax computes in two passes, and one more pass writes
# $y$: **two reads and one write** instead of three reads and one write.
#
# *Merging.* The same formula combines the states of any two disjoint parts of a row:
#
# $$m = \max(m_a, m_b), \qquad l = l_a\, e^{m_a - m} + l_b\, e^{m_b - m}.$$
#
# The merged state is a function of the union of the two parts only — the maximum of the union
# and the sum of its exponentials relative to it — so the merge is associative and commutative,
# with the empty state $(-\infty, 0)$ as identity. A row can therefore be cut into slices reduced
# by different programs and the states combined in any order or as a tree; flash-decoding does
# exactly this. Folding a block is merging with the block's own state.
#
# *Masked parts.* A part that has seen only $-\infty$ has $m = -\infty$ and $l = 0$. Using the
# shift 0 instead of $m$ in the exponents whenever $m = -\infty$ keeps $e^{-\infty - 0} = 0$ in
# place of NaN, so fully masked rows still come out as zeros.

# %% [markdown]
# ## NumPy reference
#
# The reference streams a row `block` columns at a time in float64. It folds each block by merging
# the block's own state into the running one.

# %%
lib.show(reference_merge_states)

# %%
lib.show(reference_online_update)

# %%
lib.show(reference_online_softmax)

# %% [markdown]
# ## The blockwise PyTorch implementation
#
# `lib.online_softmax` is the same recurrence with one state per row, updated for all rows at once:
# the Python loop runs over blocks, never over rows. Half-precision inputs are computed in float32.

# %%
lib.show(merge_states)

# %%
lib.show(online_update)

# %%
lib.show(online_softmax_torch)

# %% [markdown]
# `online_softmax` is the dispatching, differentiable entry point. Its backward is the one of 00.1:
# it depends only on the output, so the streaming forward reuses it unchanged.

# %%
lib.show(online_softmax)

# %% [markdown]
# ## The Triton kernels
#
# The looped kernel runs one program per row with a loop over chunks of `BLOCK` columns, so a row
# of any length fits. Its two passes are two small `@triton.jit` functions that other kernels reuse.
# Pass 1 keeps the state as two float32 scalars in registers and folds each chunk with `merge_states`;
# masked lanes load $-\infty$, which leaves the state unchanged.

# %%
lib.show(streaming.merge_states)

# %%
lib.show(streaming.stream_state)

# %% [markdown]
# Pass 2 streams the row again and writes $e^{x - m}/l$ with the final state.

# %%
lib.show(streaming.write_softmax)

# %%
lib.show(streaming.online_softmax_kernel)

# %% [markdown]
# One program per row leaves a GPU idle when there are few rows — a single sequence being decoded
# has one row of scores per head. The split variant gives each row `splits` programs. The first
# launch reduces each slice to a state and stores it; in the second, each program loads all the
# states of its row, merges them in one tree reduction (any order is right, because the merge is
# associative), and writes its own slice. The traffic is the same two reads and one write, plus
# two floats per slice.

# %%
lib.show(streaming.slice_states_kernel)

# %%
lib.show(streaming.merge_normalize_kernel)

# %%
lib.show(streaming.online_softmax_split)

# %% [markdown]
# ## Agreement
#
# Every version is compared with the one-shot float64 reference of 00.1 on the same inputs: rows of
# 203 scores whose first rows are fully masked, half masked and of size $\pm 10^4$. A block of 1
# folds one score at a time, 7 divides the row into 29 blocks, 128 leaves a partial last block, and
# 1024 is longer than the row.

# %%
FP64 = dict(atol=1e-14, rtol=1e-12, reason="float64 vs float64: blockwise vs one-shot rounding only")
FP32 = dict(atol=1e-6, rtol=1e-5, reason="float32 rounding of exp, rescalings and the row sum")

x = sample_logits(113, 203, seed=1)
x64 = x.double()
expected = reference_softmax(x.numpy())

# %%
# NBVAL_CHECK_OUTPUT
for block in (1, 7, 128, 1024):
    lib.agree(f"NumPy online loop, block {block}", reference_online_softmax(x64.numpy(), block), expected, **FP64)
    lib.agree(f"blockwise torch float64, block {block}", online_softmax_torch(x64, block), expected, **FP64)
    lib.agree(f"blockwise torch float32, block {block}", online_softmax_torch(x, block), expected, **FP32)

# %% [markdown]
# The merge is associative and commutative (up to rounding), with the empty state as identity:

# %%
# NBVAL_CHECK_OUTPUT
def state_of(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    empty = torch.full(part.shape[:-1], float("-inf"), dtype=part.dtype)
    return online_update(empty, torch.zeros_like(empty), part)


a, b, c = (state_of(x64[:, cols]) for cols in (slice(0, 50), slice(50, 120), slice(120, None)))
empty = (torch.full((113,), float("-inf"), dtype=torch.float64), torch.zeros(113, dtype=torch.float64))
ab = merge_states(*a, *b)
laws = {
    "(a·b)·c = a·(b·c)": (merge_states(*ab, *c), merge_states(*a, *merge_states(*b, *c))),
    "a·b = b·a": (ab, merge_states(*b, *a)),
    "a·∅ = a": (merge_states(*a, *empty), a),
}
for law, ((m_left, l_left), (m_right, l_right)) in laws.items():
    assert torch.equal(m_left, m_right)  # a maximum involves no rounding
    lib.agree(f"merge: {law}", l_left, l_right, **FP64)

# %% [markdown]
# The gradient of `online_softmax` is the softmax backward of 00.1; `gradcheck` confirms it against
# finite differences through the blockwise forward.

# %%
# NBVAL_CHECK_OUTPUT
x_small = sample_logits(3, 11, dtype=torch.float64, special_rows=False).requires_grad_()
assert torch.autograd.gradcheck(lambda t: online_softmax(t, block=4), (x_small,))
print("✓ gradcheck: online_softmax backward matches finite differences in float64")

# %% [markdown]
# The Triton kernels under the CPU interpreter (which costs about a millisecond per program, hence
# the first 24 rows only), writing into NaN-filled outputs: the looped kernel with chunks that do
# not divide the row and with one chunk longer than the row, and the split kernel with 4 slices of
# 64 columns and with 8 slices of 32 (7 cover the row; the 8th is empty and must merge away).

# %%
# NBVAL_CHECK_OUTPUT
x24 = x[:24]
for block in (32, 256):
    y = streaming.online_softmax_forward(x24, block=block, out=nan_like(x24))
    lib.agree(f"Triton looped kernel float32, BLOCK {block}", y, expected[:24], **FP32)
for splits, block in [(4, 16), (8, 32)]:
    y = streaming.online_softmax_split(x24, splits=splits, block=block, out=nan_like(x24))
    lib.agree(f"Triton split kernel float32, {splits} slices", y, expected[:24], **FP32)

# %% [markdown]
# In float16 the kernels must stay within twice the error of `torch.softmax` in float16 plus two
# float16 ulps (the FlashAttention rule).

# %%
# NBVAL_CHECK_OUTPUT
x16 = sample_logits(16, 203, special_rows=False).half()
baseline = torch.softmax(x16, dim=-1)
for name, y16 in [
    ("Triton looped kernel float16", streaming.online_softmax_forward(x16, block=32, out=nan_like(x16))),
    ("Triton split kernel float16", streaming.online_softmax_split(x16, splits=4, block=16, out=nan_like(x16))),
]:
    lib.agree_flash_rule(name, y16, baseline, reference_softmax(x16.numpy()))

# %% [markdown]
# ## Experiment
#
# **Memory traffic.** The paper's claim is about memory accesses per element, which follow from the
# structure of each algorithm. For rows too long for registers:

# %%
rows, n, bytes_per = 1024, 65536, 2  # a float16 matrix too wide for the one-block kernel
hbm_bytes_per_s = 4.8e12             # H200 memory bandwidth
passes = {
    "plain PyTorch (max, sub, exp, sum, div)": (5, 3),
    "safe softmax, 3 passes": (3, 1),
    "online softmax, 2 passes": (2, 1),
}
print(f"{'algorithm':40s} reads writes  MB moved  at least, at {hbm_bytes_per_s / 1e12:g} TB/s")
for name, (reads, writes) in passes.items():
    moved = (reads + writes) * rows * n * bytes_per
    print(f"{name:40s} {reads:5d} {writes:6d} {moved / 1e6:9.0f} {moved / hbm_bytes_per_s * 1e6:11.0f} µs")
safe, online = (sum(passes[name]) for name in ("safe softmax, 3 passes", "online softmax, 2 passes"))
print(f"\nsafe / online traffic: {safe}/{online} = {safe / online:.2f}, the bound on the speed-up "
      "(the paper measures up to 1.3 times for softmax alone on a GPU)")

# %% [markdown]
# On this CPU the time of these algorithms is not set by memory traffic (the rows fit in cache and
# the Python loop over blocks dominates), so the speed claim needs a GPU: `make bench-gpu` times the
# kernels. What *can* be tested here is the numerical claim: streaming is as accurate as the
# one-shot formula. We measure the relative RMS error of the float32 blockwise version against
# float64 for every block size from 1 to the full row, next to a control: the safe softmax whose
# sum $l$ is accumulated block by block in the same order, without any rescaling.

# %%
def safe_softmax_blockwise_sum(x: torch.Tensor, block: int) -> torch.Tensor:
    """Control: the max first (pass 1), then l summed block by block as the online version does."""
    m = x.amax(dim=-1, keepdim=True)
    l = torch.zeros_like(m)
    for start in range(0, x.shape[-1], block):
        l = l + torch.exp(x[:, start : start + block] - m).sum(dim=-1, keepdim=True)
    return torch.exp(x - m) / l


x_exp = sample_logits(256, 4096, seed=3, special_rows=False)
ref_exp = reference_softmax(x_exp.numpy())
blocks = [2**k for k in range(13)]
methods = {"online (rescaled running sum)": online_softmax_torch,
           "control (max first, same blockwise sum)": safe_softmax_blockwise_sum}
torch.set_num_threads(1)  # thousands of tiny operations: a second thread would only add wake-ups
errors = {name: [rel_rms_error(fn(x_exp, b).double().numpy(), ref_exp) for b in blocks] for name, fn in methods.items()}
torch.set_num_threads(2)
one_shot = rel_rms_error(softmax_torch(x_exp).double().numpy(), ref_exp)
print(f"{'block':>6s} {'online':>9s} {'control':>9s}   (one-shot softmax_torch: {one_shot:.1e}, "
      f"float32 eps: {torch.finfo(torch.float32).eps:.1e})")
for b, e_online, e_control in zip(blocks, *errors.values()):
    print(f"{b:6d} {e_online:9.1e} {e_control:9.1e}")
print(f"block 1 vs one-shot: {errors['online (rescaled running sum)'][0] / one_shot:.0f} times the error")

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.4))
for (name, errs), marker in zip(errors.items(), ["o", "x"]):
    ax.plot(blocks, errs, marker=marker, ms=4, label=name)
ax.axhline(one_shot, color="gray", ls="--", label="one-shot softmax_torch")
ax.set(xscale="log", yscale="log", xlabel="block size (columns per step), row length 4096",
       ylabel="relative RMS error vs float64", title="Online softmax in float32: error vs block size")
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# The online and control curves lie on top of each other at every block size: rescaling the running
# sum costs no accuracy. What does cost accuracy is adding $n/b$ partial sums one after another —
# any streaming sum does that — so the error grows as the blocks get smaller, by more than an order
# of magnitude at one column per step, and falls back to the one-shot level from a few hundred
# columns per block. The kernels fold 1024 columns per step by default, where the curve is back at
# the one-shot level.

# %% [markdown]
# ## Benchmark
#
# On the CPU we time the NumPy loop (the reference), the blockwise PyTorch version, the one-shot
# `lib.softmax` and `torch.softmax` on a wide float32 matrix. Expect the blockwise version to lose
# to the one-shot ones here: each block costs several small PyTorch calls, and a CPU row of 8192
# floats sits in cache anyway. On a GPU, `make bench-gpu` runs the same table with the looped and
# split Triton kernels, including a matrix of 8 rows of 262 144 scores where the split kernel's
# extra parallelism is what matters.

# %%
lib.show(online_softmax_table)

# %%
table = online_softmax_table(sample_logits(256, 8192, special_rows=False))
table.show()

# %% [markdown]
# ## Exercises
#
# In `exercises/00_method.py` (open it with `make lab`):
#
# * **00.2a** `online_update(m, l, block)` — fold one block of every row into the running state
#   $(m, l)$, safe for rows that have seen only $-\infty$. Check it with `check("00.2a", online_update)`.
# * **00.2b** `merge_states(m_a, l_a, m_b, l_b)` — combine the states of two parts of the same rows.
#   Check it with `check("00.2b", merge_states)`.
#
# Going further (no check): add the output accumulation of attention to the looped kernel — keep a
# running vector $o$ next to $(m, l)$, rescaled by the same factor $e^{m - m'}$ — and you have written
# the inner loop of FlashAttention, the subject of section 01.1.
