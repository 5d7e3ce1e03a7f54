# %% [markdown]
# # 01.2 When low-precision flash attention diverges
#
# Training GPT-2 with FlashAttention in bf16 can run normally for thousands of steps and then blow
# up. Haiquan Qiu and Quanming Yao, *Why Low-Precision Transformer Training Fails: An Analysis on
# Flash Attention* (arXiv 2510.04212, 2025), trace the explosion to a rounding error that is
# *biased* — it keeps the same sign — and to representations similar enough that those errors line
# up across tokens and steps instead of cancelling. Their fix is a few lines in the kernel of 01.1.
# A GPT-2 run on GPUs is out of reach here; what we can do on a CPU is emulate the kernel's bf16
# rounding exactly, find the bias, watch it accumulate, and show that the fix removes it.

# %%
import kernels  # noqa: F401  first: on a machine without a GPU it switches Triton to its CPU interpreter

import matplotlib.pyplot as plt
import numpy as np
import torch

import kernels.flash_attn as fa
import lib
import lib.attention.flash as flash
from lib.agreement import rel_rms_error
from lib.attention import attention_ref, flash_attention
from lib.attention.lowprec import (
    bf16_round,
    flash_attention_bf16,
    flash_fwd_lowprec_np,
    reference_stable_shift,
    sample_tied_inputs,
    signed_error,
    stable_shift,
)
from lib.bench import compare
from lib.testing import nan_like

rng = lib.seed_everything(0)  # seeds Python, NumPy and torch; returns a NumPy Generator
torch.set_num_threads(2)

# %% [markdown]
# ## Idea
#
# bf16 keeps 8 significant bits: between 1 and 2 its numbers are $2^{-7}$ apart, and every store
# rounds to the nearest one (ties to the even one). Rounding to nearest is unbiased *on average over
# values that fall anywhere between two neighbours*. The paper's observation is that inside flash
# attention the values are not spread like that.
#
# Per key tile, the forward pass of 01.1 computes $\tilde P = e^{S - m}$ with $m$ the row maximum,
# casts $\tilde P$ to bf16 and multiplies it with $V$ (a bf16 matmul: float32 products and sums
# inside, one bf16 rounding of the result $T = \tilde P V$). The maximal score gives $\tilde P = 1$
# exactly. If $k \ge 2$ scores tie at the maximum — identical keys, which similar, low-rank
# representations produce — then
#
# $$T = \underbrace{v_a + v_b + \dots}_{k \text{ exact terms}} \;+\; \underbrace{\textstyle\sum_{j} \tilde P_j v_j}_{\text{small terms}}.$$
#
# The sum of two bf16 numbers of similar size needs one bit more than bf16 has, so it often lies
# exactly halfway between two bf16 neighbours; the small terms then decide which way it rounds. When
# the features of $V$ share a sign, the small terms push every such halfway case the same way: the
# rounding error of $T$ has a sign. It reaches $O$, then the backward pass through
# $D = \mathrm{rowsum}(dO \circ O)$, and, the paper argues, the weight gradients — along the same
# low-rank direction at every step, so the errors add up linearly instead of as a random walk. The
# spectral norm of the weights grows and the loss explodes.
#
# **The fix.** Softmax does not care which constant is subtracted:
# $\mathrm{softmax}(s) = e^{s - c}/\sum e^{s - c}$ for any $c$. On a tile row whose maximum $m$ is
# tied — $t = \#\{s \ge m - \tau\} \ge 2$ — shift by $c = \beta m$ when $m > 0$ and by $c = 0$ when
# $m < 0$, so no tied entry gives exactly 1; otherwise shift by $m$ as before. The running shift is
# $\max(c_\text{tile}, c_\text{prev})$, still non-decreasing, so the online softmax stays exact. The
# authors' code uses $\beta = 2$ and $\tau = 10^{-3}$ (their `attention.py`; the research note had
# $\tau$ unspecified), and the book's kernels use the same values. The price: with a large positive
# $m$, $e^{s - 2m}$ can underflow, so $\beta$ must not be too large.

# %% [markdown]
# ## NumPy reference
#
# First the rounding itself, on the bit pattern: bf16 is the top half of a float32.

# %%
lib.show(bf16_round)

# %% [markdown]
# The stable shift, one tile row at a time:

# %%
lib.show(reference_stable_shift)

# %% [markdown]
# And the forward pass of 01.1 with the casts placed exactly where a bf16 kernel stores a value —
# $\tilde P$ before the second matmul, that matmul's result, and optionally the accumulator. The
# output is returned before the kernel's own final bf16 store (one more rounding, of generic values,
# which the fix does not concern), so what we measure is the tile loop.

# %%
lib.show(flash_fwd_lowprec_np)

# %%
lib.show(signed_error)

# %% [markdown]
# ## The optimized implementation
#
# The same emulation batched over (batch, head) in PyTorch, with PyTorch's own bf16 casts. A CPU
# bf16 matmul does not round where a GPU's tensor cores do, so the arithmetic stays in float32 and
# every storage point is an explicit cast.

# %%
lib.show(stable_shift)

# %%
lib.show(flash_attention_bf16)

# %% [markdown]
# In the real kernels of 01.1 the fix is the `stable_max=True` switch: in the blocked PyTorch path a
# different tile shift, in the Triton kernel a `STABLE_MAX` branch of a few lines around the maximum
# (scores there are in base-2 units, so $\tau$ is scaled by $\log_2 e$).

# %%
lib.show(flash.stable_tile_shift)

# %%
lib.show(fa._fwd_tiles)

# %% [markdown]
# ## Agreement
#
# The bit-level rounding against PyTorch's own float32 → bf16 cast, on a million random values plus
# the awkward ones: exact halfway cases, both signs, zero, subnormals, infinities.

# %%
# NBVAL_CHECK_OUTPUT
values = np.concatenate([
    rng.standard_normal(1_000_000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 1_000_000),
    np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 0.0, -0.0, 1e-40, np.inf, -np.inf], dtype=np.float32),
])
ours = bf16_round(values)
torch_cast = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
assert np.array_equal(ours.view(np.uint32), torch_cast.view(np.uint32))
print(f"✓ bf16_round is bit-identical to torch's cast on {values.size:,} values (halfway cases included)")

# %% [markdown]
# Shift invariance: in float64 the stable shift changes nothing. On inputs whose rows are full of
# ties — every key repeated — the blocked path with and without `stable_max` equals the reference
# to float64 rounding, and so does the Triton kernel under the interpreter in float32.

# %%
# NBVAL_CHECK_OUTPUT
q_t, k_t, v_t = (t.double() for t in sample_tied_inputs(2, 96, 32, ties=4, seed=1))
k_t[:, 48:] = k_t[:, :48]                                   # the second half repeats the first: more ties
expected = attention_ref(q_t.numpy(), k_t.numpy(), v_t.numpy(), causal=True)[0]
for stable in (False, True):
    lib.agree(f"float64 flash, stable_max={stable}", flash_attention(q_t, k_t, v_t, causal=True, stable_max=stable),
              expected, atol=1e-12, rtol=1e-10, reason="softmax is shift-invariant: only rounding differs")
q32, k32, v32 = (t.float().unsqueeze(1).contiguous() for t in (q_t, k_t, v_t))
o_kernel, _ = fa.flash_attn_forward(q32, k32, v32, causal=True, scale=32**-0.5, stable_max=True, out=nan_like(q32))
lib.agree("Triton STABLE_MAX fp32 (interpreter)", o_kernel[:, 0], expected, atol=1e-5, rtol=1e-4,
          reason="exact rewrite, fp32 accumulation over ≤ 96 keys")
ties_seen = int((torch.from_numpy(q_t.numpy() @ k_t.numpy().swapaxes(-1, -2)).amax(-1, keepdim=True)
                 == torch.from_numpy(q_t.numpy() @ k_t.numpy().swapaxes(-1, -2))).sum(-1).min())
print(f"✓ every row of this input has at least {ties_seen} tied maxima")

# %% [markdown]
# The two emulations — NumPy with float64 matmuls, PyTorch with float32 ones — round at the same
# points but sum in different orders, so they are not bit-identical. What must agree is what the
# experiment measures: the per-feature signed error against float64, in sign and to within 10 % in
# size, on inputs with two tied maxima per row. Both stay within bf16's relative precision $2^{-7}$ of
# the exact result.

# %%
# NBVAL_CHECK_OUTPUT
q2, k2, v2 = sample_tied_inputs(256, 64, 32, ties=2, seed=2)
exact = attention_ref(*(t.double().numpy() for t in (q2, k2, v2)))[0]
o_torch = flash_attention_bf16(q2, k2, v2)[0].double().numpy()
o_numpy = np.stack([flash_fwd_lowprec_np(*(t[b].float().numpy() for t in (q2, k2, v2)))[0] for b in range(256)])
err_torch, err_numpy = signed_error(o_torch, exact), signed_error(o_numpy, exact)
assert np.array_equal(np.sign(err_torch), np.sign(err_numpy)), "the signed errors disagree in sign"
lib.agree("signed error per feature, NumPy vs torch emulation", err_numpy, err_torch, atol=0.0, rtol=0.1,
          reason="same rounding points, different summation order: within 10 %")
for name, o in (("torch", o_torch), ("NumPy", o_numpy)):
    assert rel_rms_error(o, exact) <= 2**-7
    print(f"✓ {name} bf16 emulation within 2^-7 of float64 (relative RMS error {rel_rms_error(o, exact):.1e})")

# %% [markdown]
# ## Experiment
#
# **1. The bias appears with ties and the stable shift removes it.** For 1 to 8 tied maxima per row,
# 2,000 sequences of 64 tokens with $d = 32$ (the inputs of `sample_tied_inputs`: a repeated key that
# every query points at, and values whose features have mean −1), we measure the mean signed error
# of $O$ over every row and feature, with its standard error, for the standard and the stable shift.

# %%
lib.show(sample_tied_inputs)

# %%
tie_counts = [1, 2, 3, 4, 8]
bias = {False: [], True: []}
spread = {False: [], True: []}
for ties in tie_counts:
    q_s, k_s, v_s = sample_tied_inputs(2000, 64, 32, ties=ties, seed=10 + ties)
    exact = attention_ref(*(t.double().numpy() for t in (q_s, k_s, v_s)))[0]
    for stable in (False, True):
        err = flash_attention_bf16(q_s, k_s, v_s, stable=stable)[0].double().numpy() - exact
        bias[stable].append(err.mean())
        spread[stable].append(err.std() / np.sqrt(err.size))
print(f"{'ties':>5s} {'standard shift':>24s} {'stable shift':>24s}   (mean signed error ± standard error)")
for i, ties in enumerate(tie_counts):
    print(f"{ties:5d} {bias[False][i]:+13.2e} ± {spread[False][i]:.0e} {bias[True][i]:+13.2e} ± {spread[True][i]:.0e}")

# %%
# NBVAL_CHECK_OUTPUT
tied = [i for i, t in enumerate(tie_counts) if t >= 2]
ratio = min(abs(bias[False][i]) / abs(bias[True][i]) for i in tied)
assert all(abs(bias[False][i]) > 20 * spread[False][i] for i in tied), "the standard shift should be biased"
assert ratio > 5, "the stable shift should shrink the bias"
assert bias[False][0] == bias[True][0], "with one maximum both shifts are the same"
print(f"✓ with ≥ 2 ties the standard shift's error is biased (> 20 standard errors from 0) "
      f"and the stable shift shrinks it at least {ratio:.0f}×; with one maximum the two are identical")

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.4))
for stable, marker in ((False, "o"), (True, "s")):
    ax.errorbar(tie_counts, bias[stable], yerr=2 * np.array(spread[stable]), marker=marker, capsize=3,
                label="stable shift (β = 2, τ = 1e-3)" if stable else "standard shift (row maximum)")
ax.axhline(0, color="gray", lw=0.8)
ax.set(xlabel="tied maxima per row", ylabel="mean signed error of O",
       title="bf16 flash attention: a biased error at ties, and the fix")
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# With two or more tied maxima the standard shift's error is biased, shrinking as ties grow (more
# exact terms, relatively smaller leftovers), and the stable shift brings it to the noise level. With
# a single maximum the two shifts are the same kernel — and there is a bias of the same size: $T$ is
# then one exact $v_a$ plus small terms that the bf16 rounding of $T$ drops, in the same direction
# whenever they share a sign. The paper's fix addresses ties only; this micro-benchmark says that
# with peaked attention a lone exact 1 biases the output as much, a limit of the fix worth knowing. (The paper
# reports loss curves rather than this micro-benchmark: compare qualitatively.)
#
# **2. Biased errors accumulate.** A training step's error is a random vector; what matters is
# whether the vectors of successive steps keep a direction. We run 150 "steps", each on a fresh batch
# of 8 sequences with two tied maxima per row, and record the per-feature signed error of $O$ — the
# error that the backward pass reads through $D = \mathrm{rowsum}(dO \circ O)$ and passes on to
# every weight gradient. We add those vectors up, once as they come and once with a random sign per
# step (a control with the same sizes and no common direction), for both shifts.

# %%
steps = 150
signs = np.where(rng.random(steps) < 0.5, -1.0, 1.0)
errors = {False: [], True: []}
for step in range(steps):
    q_s, k_s, v_s = sample_tied_inputs(8, 64, 32, ties=2, seed=1000 + step)
    exact = attention_ref(*(t.double().numpy() for t in (q_s, k_s, v_s)))[0]
    for stable in (False, True):
        errors[stable].append(signed_error(flash_attention_bf16(q_s, k_s, v_s, stable=stable)[0], exact))
running = {
    "standard shift": np.cumsum(errors[False], axis=0),
    "standard shift, random signs (control)": np.cumsum(signs[:, None] * np.array(errors[False]), axis=0),
    "stable shift": np.cumsum(errors[True], axis=0),
}
norms = {name: np.linalg.norm(r, axis=1) for name, r in running.items()}
t = np.arange(1, steps + 1)
slopes = {name: np.polyfit(np.log(t[9:]), np.log(n[9:]), 1)[0] for name, n in norms.items()}
for name, n in norms.items():
    print(f"{name:40s} ‖Σ error‖ after {steps} steps {n[-1]:.2e}   growth ∝ T^{slopes[name]:.2f}")

# %%
# NBVAL_CHECK_OUTPUT
assert slopes["standard shift"] > 0.9 and slopes["standard shift, random signs (control)"] < 0.75
assert norms["stable shift"][-1] < norms["standard shift"][-1] / 10
print("✓ the standard shift's errors add up linearly in the number of steps (a common direction), "
      "the same errors with random signs only as a random walk, and the stable shift's total is ≥ 10× smaller")

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.6))
for (name, n), style in zip(norms.items(), ("-", ":", "--")):
    ax.plot(t, n, style, label=name)
ax.plot(t, norms["standard shift"][-1] * t / steps, color="gray", lw=0.6, label="∝ T")
ax.plot(t, norms["standard shift, random signs (control)"][-1] * np.sqrt(t / steps), color="gray", lw=0.6, ls="-.",
        label="∝ √T")
ax.set(xscale="log", yscale="log", xlabel="steps T", ylabel="‖accumulated signed error of O‖",
       title="Biased rounding errors add up; unbiased ones random-walk")
ax.legend(frameon=False, fontsize=8)
plt.show()

# %% [markdown]
# This is the mechanism in miniature: the same per-step errors, summed with their own signs, grow
# linearly; shuffled in sign they grow as $\sqrt T$. In a real run the accumulated error sits in the
# weights and feeds back into the next forward pass, which is what the paper sees blow up after
# thousands of steps of GPT-2 training (its Figures 1 and 8 show the bf16 flash run exploding and the
# stable-max run training smoothly). That feedback loop, at that scale, is out of reach here.

# %% [markdown]
# ## Benchmark
#
# What does the fix cost? In the blocked PyTorch path the tile shift needs one more comparison and
# count per tile row; we time `flash_attention` with and without `stable_max` (float32, 4 heads, 1,024
# tokens, 256×256 tiles on this CPU), beside the bf16 emulation. On a GPU the `STABLE_MAX` branch of
# the kernel adds the same few instructions per tile, against two matmuls.

# %%
q_b, k_b, v_b = (torch.randn(1, 4, 1024, 64) for _ in range(3))
q_h, k_h, v_h = (t.bfloat16() for t in (q_b, k_b, v_b))
with torch.no_grad():
    compare("flash attention, stable max", {
        "standard shift": lambda: flash_attention(q_b, k_b, v_b, block_m=256, block_n=256),
        "stable shift": lambda: flash_attention(q_b, k_b, v_b, block_m=256, block_n=256, stable_max=True),
        "bf16 emulation, stable": lambda: flash_attention_bf16(q_h, k_h, v_h, stable=True, block_n=256),
    }, shape="B1·H4·N1024·d64", dtype="float32", reference="standard shift").show()

# %% [markdown]
# ## Exercises
#
# In `exercises/01_attention.py` (open it with `make lab`):
#
# * **01.2a** `stable_shift(s_tile, m_prev, beta, tau)` — the running shift after one tile with the
#   stable max: $\beta m$ or 0 when the tile row's maximum is tied, $m$ otherwise, never decreasing.
#   Check it with `check("01.2a", stable_shift)`; the check also runs an online softmax driven by
#   your shift on rows full of ties and compares it with exact attention.
#
# Going further (no check): make the accumulator bf16 (`acc="bf16"`, what a kernel written with
# bf16 tensors does) and measure how much larger the bias becomes; or find the $\beta$ at which
# $e^{s - \beta m}$ underflows for the score ranges of the MiniLM heads of 01.1.
