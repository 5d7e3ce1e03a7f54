# %% [markdown]
# # 01.1 Tiled exact attention: FlashAttention-2
#
# Attention on a sequence of $N$ tokens builds an $N \times N$ matrix of scores, one row per query.
# Written the obvious way, that matrix goes to main memory, comes back for the softmax, goes out
# again and comes back for the product with $V$: the arithmetic is cheap next to that traffic, and
# the memory grows as $N^2$. FlashAttention never writes the matrix at all. This section builds its
# second version — Tri Dao, *FlashAttention-2: Faster Attention with Better Parallelism and Work
# Partitioning* (arXiv 2307.08691, 2023) — three times: as NumPy loops over tiles, as blocked
# PyTorch that trains, and as a Triton kernel. Every later attention section of the book reuses it.

# %%
import kernels  # noqa: F401  first: on a machine without a GPU it switches Triton to its CPU interpreter

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from pydoc_data.topics import topics

import kernels.flash_attn as fa
import lib
import lib.attention.flash as flash
from lib.attention import attention_ref, attention_ref_grad, flash_bwd_np, flash_fwd_np, tiles_visited
from lib.attention.flash import flash_attention, flash_attention_with_lse
from lib.benchmarks.attention import attention_table, naive_attention
from lib.data import CharTokenizer, load_corpus, random_batches, train_val_split
from lib.memory import peak_tensor_bytes
from lib.models.decoder import Decoder, DecoderConfig
from lib.models.minilm import load_minilm
from lib.testing import nan_like
from lib.train import TrainConfig, train

rng = lib.seed_everything(0)  # seeds Python, NumPy and torch; returns a NumPy Generator
torch.set_num_threads(2)

# %% [markdown]
# ## Idea
#
# Per batch element and head, with $Q, K, V \in \mathbb{R}^{N \times d}$ and $s = 1/\sqrt d$,
#
# $$S = s\,QK^\top, \qquad P = \mathrm{softmax}_\text{row}(S), \qquad O = PV.$$
#
# **Tiling.** Cut the queries into row blocks $Q_i$ of $B_r$ rows and the keys and values into
# column blocks $K_j, V_j$ of $B_c$ rows. One program holds $Q_i$ in fast memory and streams the
# $(K_j, V_j)$ past it. For each row it keeps the online-softmax state of section 00.2 — a running
# maximum $m$ and sum $\ell$ — plus a running output $\mathrm{Acc}$:
#
# $$m' = \max(m, \operatorname{rowmax} S_{ij}),\quad \alpha = e^{m - m'},\quad \tilde P = e^{S_{ij} - m'},\quad
# \ell \leftarrow \alpha\ell + \operatorname{rowsum}\tilde P,\quad \mathrm{Acc} \leftarrow \alpha\,\mathrm{Acc} + \tilde P V_j.$$
#
# After the last tile $O_i = \mathrm{Acc}/\ell$, exactly — the rescaling by $\alpha$ re-expresses
# everything accumulated so far relative to the new maximum, as in 00.2. No $N\times N$ matrix ever
# exists; extra memory is $O(N)$: the logsumexp $L_i = m + \log \ell$, one float per row.
#
# **What version 2 changes** (Dao, §3): (1) the division by $\ell$ happens once at the end, not per
# tile, and only $L$ is stored for the backward pass, not $m$ and $\ell$; (2) the work is spread over
# query blocks as well as batch and heads (the forward's grid is *query blocks × B·H*; the backward's
# is key blocks), so one long sequence still fills the GPU; (3) inside a block, warps split $Q$ rather
# than $K, V$, so they never exchange partial sums. Causal attention skips every tile above the
# diagonal — about half of them — and only tiles that straddle the diagonal need a mask.
#
# **Backward.** With $D_i = \operatorname{rowsum}(dO_i \circ O_i)$, recompute
# $P = e^{sQ_iK_j^\top - L_i}$ tile by tile (never stored) and
#
# $$dV_j \mathrel{+}= P^\top dO_i,\quad dP = dO_i V_j^\top,\quad dS = P \circ (dP - D_i),\quad
# dK_j \mathrel{+}= s\,dS^\top Q_i,\quad dQ_i \mathrel{+}= s\,dS\,K_j.$$
#
# $dK_j, dV_j$ belong to one key block, so one program per key block owns them. $dQ_i$ receives a
# contribution from every key block: FlashAttention-2 adds them with atomic float additions, whose
# order — and so the rounding — changes from run to run. The book's kernel runs a second pass, one
# program per query block, that recomputes $P$ and sums $dQ_i$ itself: deterministic, at the price
# of computing $QK^\top$ once more.
#
# A fully masked row (every key hidden) has $m = -\infty$; the exponents then use the shift 0
# instead of $m$, so the row gives $O = 0$ and $L = -\infty$, not NaN.

# %% [markdown]
# ## NumPy reference
#
# Two references in float64. The first writes out $S$ and uses the closed-form softmax Jacobian —
# the obvious, quadratic-memory truth.

# %%
lib.show(attention_ref)

# %%
lib.show(attention_ref_grad)

# %% [markdown]
# The second is FlashAttention-2 as literal loops over tiles, line by line as in the equations
# above, tail tiles included. Only the order of summation differs from the first, so they must agree
# to float64 rounding.

# %%
lib.show(flash_fwd_np)

# %%
lib.show(flash_bwd_np)

# %% [markdown]
# ## The blocked PyTorch implementation
#
# `lib.attention.flash` runs the same loops with every tile matmul batched over the leading
# (batch, head) dimensions, running statistics in float32. One tile step:

# %%
lib.show(flash._online_step)

# %% [markdown]
# The forward loops over query tiles and, for each, over only the key tiles it needs
# (`_key_starts` drops the tiles above the diagonal, or outside a sliding window). The scores of a
# tile get the causal mask only when the tile actually straddles a boundary.

# %%
lib.show(flash._tile_scores)

# %%
lib.show(flash._forward_torch)

# %%
lib.show(flash._backward_torch)

# %% [markdown]
# `FlashAttnFn` ties them together as an autograd function that saves $(Q, K, V, O, L)$ — never
# $P$ — and `flash_attention` checks its arguments and builds it. CUDA tensors go to the Triton
# kernel below; everything else runs this PyTorch path.

# %%
lib.show(flash.FlashAttnFn)

# %% [markdown]
# ## The Triton kernel
#
# One program per (query block, batch·head). The scale folds $\log_2 e$ in so the kernel can use
# `exp2`. The loop over key tiles runs only over the tiles the mask leaves (below the diagonal, inside
# a window, or holding a sink), and every visited tile applies the mask with one `tl.where` — a
# production kernel splits the loop so that only boundary tiles pay for it (an exercise below).

# %%
lib.show(fa._fwd_tiles)

# %%
lib.show(fa._fwd_kernel)

# %% [markdown]
# The backward pass: `_bwd_preprocess` computes $D$, then one program per key block accumulates
# $dK_j$ and $dV_j$ over the query blocks that reach it, and a second kernel, one program per query
# block, recomputes $P$ and sums $dQ_i$ without atomics.

# %%
lib.show(fa._bwd_dkdv_kernel)

# %%
lib.show(fa._bwd_dq_kernel)

# %% [markdown]
# ## Agreement
#
# The real inputs: the queries, keys and values of layer 2 of the pretrained all-MiniLM-L6-v2
# encoder (12 heads of width 32) reading the first 256 tokens of Python's documentation of its
# built-in types.

# %%
minilm = load_minilm()
text = " ".join(topics["types"].split())
encoded = minilm.forward_texts([text], output_attentions=False)
with torch.no_grad():
    q, k, v = (t.contiguous() for t in minilm.encoder.layers[2].attention.split_heads(encoded.output.hidden_states[2]))
q64, k64, v64 = (t.double().numpy() for t in (q, k, v))
do = torch.randn_like(q)
print(f"{' '.join(encoded.batch.tokens[0][:12])} …  →  q, k, v of shape {tuple(q.shape)}")

FP64 = dict(atol=1e-12, rtol=1e-10, reason="float64: tiles change only the order of summation")
FP32 = dict(atol=1e-5, rtol=1e-4, reason="exact rewrite, fp32 accumulation over ≤ 256 keys")

# %% [markdown]
# The tile loops against the materialized reference, with tiles of 64 and of 48 (so that 256 keys
# leave a partial last tile), causal and not.

# %%
# NBVAL_CHECK_OUTPUT
for causal in (False, True):
    o_ref, lse_ref = attention_ref(q64, k64, v64, causal=causal)
    grads_ref = attention_ref_grad(q64, k64, v64, do.double().numpy(), causal=causal)
    for block in (64, 48):
        o_np, lse_np = flash_fwd_np(q64, k64, v64, block, block, causal=causal)
        lib.agree(f"tiled NumPy o, blocks {block}, causal={causal}", o_np, o_ref, **FP64)
        lib.agree(f"tiled NumPy lse, blocks {block}, causal={causal}", lse_np, lse_ref, **FP64)
        grads_np = flash_bwd_np(q64, k64, v64, o_np, lse_np, do.double().numpy(), block, block, causal=causal)
        for name, g_np, g_ref in zip(("dq", "dk", "dv"), grads_np, grads_ref):
            lib.agree(f"tiled NumPy {name}, blocks {block}, causal={causal}", g_np, g_ref, **FP64)

# %% [markdown]
# The blocked PyTorch path in float32 against the float64 reference: output, logsumexp and the three
# gradients of a random upstream gradient.

# %%
# NBVAL_CHECK_OUTPUT
for causal in (False, True):
    o_ref, lse_ref = attention_ref(q64, k64, v64, causal=causal)
    grads_ref = attention_ref_grad(q64, k64, v64, do.double().numpy(), causal=causal)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    o, lse = flash_attention_with_lse(qg, kg, vg, causal=causal)
    o.backward(do)
    lib.agree(f"lib flash fp32 o, causal={causal}", o, o_ref, **FP32)
    lib.agree(f"lib flash fp32 lse, causal={causal}", lse, lse_ref, atol=1e-5, rtol=1e-6,
              reason="fp32 logsumexp of ≤ 256 terms")
    for name, g, g_ref in zip(("dq", "dk", "dv"), (qg.grad, kg.grad, vg.grad), grads_ref):
        lib.agree(f"lib flash fp32 {name}, causal={causal}", g, g_ref, **FP32)

# %% [markdown]
# A sweep of awkward sizes on seeded random inputs: a single query, lengths below, at and above one
# tile of 64, head widths 16 and 64. Then `gradcheck` in float64 at 17 and 33 positions with tiles of
# 8 (tail tiles) — in its fast mode, which compares random projections of the Jacobian; the test suite
# runs the full check — and a fully masked row (an additive bias of $-\infty$ on every key of row 3).

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(1)
for n in (1, 17, 64, 257):
    for d in (16, 64):
        for causal in (False, True):
            qs, ks, vs = (torch.randn(2, 3, n, d, generator=g) for _ in range(3))
            expected = attention_ref(*(t.double().numpy() for t in (qs, ks, vs)), causal=causal)[0]
            lib.agree(f"N={n:3d} d={d:2d} causal={causal!s:5}", flash_attention(qs, ks, vs, causal=causal),
                      expected, **FP32)

# %%
# NBVAL_CHECK_OUTPUT
for n in (17, 33):
    for causal in (False, True):
        inputs = tuple(torch.randn(1, 2, n, 8, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3))
        assert torch.autograd.gradcheck(lambda a, b, c: flash_attention(a, b, c, causal=causal, block_m=8, block_n=8),
                                        inputs, fast_mode=True)
        print(f"✓ gradcheck N={n} causal={causal}: the backward matches finite differences in float64")

qs, ks, vs = (torch.randn(1, 2, 10, 16, generator=g, requires_grad=True) for _ in range(3))
bias = torch.zeros(10, 10)
bias[3] = float("-inf")
o, lse = flash_attention_with_lse(qs, ks, vs, bias=bias)
o.sum().backward()
assert torch.isneginf(lse[..., 3]).all() and not o.isnan().any() and not qs.grad.isnan().any()
lib.agree("fully masked row: o is 0", o[..., 3, :], torch.zeros(1, 2, 16), atol=0.0, rtol=0.0,
          reason="the −inf guard: P = 0 exactly")
lib.agree("fully masked row: its dq is 0", qs.grad[..., 3, :], torch.zeros(1, 2, 16), atol=0.0, rtol=0.0,
          reason="P = 0 exactly, so dS = 0")
print("✓ fully masked row: lse = −inf, no NaN anywhere in o or the gradients")

# %% [markdown]
# The Triton kernels under the CPU interpreter, on two real heads and the first 96 tokens (the
# interpreter runs each program in Python, about a millisecond each, so the slice is small), writing
# into NaN-filled outputs so that any element the kernel forgets fails. The interpreter's blocks are
# 16×16, so 96 tokens are 6 query and 6 key tiles.

# %%
# NBVAL_CHECK_OUTPUT
qs, ks, vs, dos = (t[:, :2, :96].contiguous() for t in (q, k, v, do))
scale = qs.shape[-1] ** -0.5
for causal in (False, True):
    o_k, lse_k = fa.flash_attn_forward(qs, ks, vs, causal=causal, scale=scale, out=nan_like(qs))
    dq_k, dk_k, dv_k = fa.flash_attn_backward(qs, ks, vs, o_k, lse_k, dos, causal=causal, scale=scale)
    qg, kg, vg = (t.clone().requires_grad_() for t in (qs, ks, vs))
    o_t, lse_t = flash_attention_with_lse(qg, kg, vg, causal=causal)
    o_t.backward(dos)
    KERNEL = dict(atol=1e-4, rtol=1e-4, reason="Triton interpreter fp32 vs torch fp32: different tile order")
    lib.agree(f"Triton o, causal={causal}", o_k, o_t, **KERNEL)
    lib.agree(f"Triton lse, causal={causal}", lse_k, lse_t, **KERNEL)
    for name, g_k, g_t in zip(("dq", "dk", "dv"), (dq_k, dk_k, dv_k), (qg.grad, kg.grad, vg.grad)):
        lib.agree(f"Triton {name}, causal={causal}", g_k, g_t, **KERNEL)

# %% [markdown]
# In float16 the blocked path must stay within twice the error of plain PyTorch attention in float16
# (plus two float16 ulps): the FlashAttention rule.

# %%
# NBVAL_CHECK_OUTPUT
q16, k16, v16 = (t.half() for t in (q, k, v))
reference = attention_ref(*(t.double().numpy() for t in (q16, k16, v16)), causal=True)[0]
verdict = lib.agree_flash_rule("lib flash float16, causal", flash_attention(q16, k16, v16, causal=True),
                               naive_attention(q16, k16, v16, causal=True), reference)

# %% [markdown]
# ## Experiment
#
# **Memory.** The paper's first claim is the memory: the extra memory is linear in $N$, against
# quadratic for attention that writes out $S$. We count the bytes of every tensor each
# implementation creates, at its peak (`lib.memory.peak_tensor_bytes`: a PyTorch dispatch hook that
# adds up storages as operators create them and subtracts them as they are freed), for one sequence
# of 4 heads with $d = 64$, forward only, from 1k to 8k tokens. The blocked path uses 256×256 tiles
# here, the size that runs best on this CPU (see the benchmark below).

# %%
lib.show(peak_tensor_bytes)

# %%
lengths = [1024, 2048, 4096, 8192]
methods = {
    "naive (S materialized)": naive_attention,
    "lib flash (tiled)": lambda q, k, v: flash_attention(q, k, v, block_m=256, block_n=256),
    "torch SDPA": F.scaled_dot_product_attention,
}
peaks = {name: [] for name in methods}
with torch.no_grad():
    for n in lengths:
        qm, km, vm = (torch.randn(1, 4, n, 64) for _ in range(3))
        for name, fn in methods.items():
            peaks[name].append(peak_tensor_bytes(lambda: fn(qm, km, vm)))
        del qm, km, vm
output_bytes = [4 * n * 64 * 4 for n in lengths]
print(f"{'N':>6s} " + " ".join(f"{name:>24s}" for name in methods) + f" {'the output itself':>18s}")
for i, n in enumerate(lengths):
    print(f"{n:6d} " + " ".join(f"{peaks[name][i] / 2**20:21.1f} MB" for name in methods)
          + f" {output_bytes[i] / 2**20:15.1f} MB")
growth = {name: (p[-1] - p[-2]) / (p[-2] - p[-3]) for name, p in peaks.items()}
print("\ndoubling N from 4096 to 8192 adds this many times what doubling from 2048 to 4096 added "
      "(4 for N², 2 for N): " + ", ".join(f"{name} {ratio:.2f}" for name, ratio in growth.items()))
print(f"at N = 8192 the naive path needs {peaks['naive (S materialized)'][-1] / peaks['lib flash (tiled)'][-1]:.0f} "
      "times the memory of the tiled one")

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.6))
for (name, p), marker in zip(peaks.items(), "osx"):
    ax.plot(lengths, np.array(p) / 2**20, marker=marker, label=name)
ax.plot(lengths, np.array(output_bytes) / 2**20, ls="--", color="gray", label="the output O alone")
ax.set(xscale="log", yscale="log", xlabel="sequence length N (1 sequence, 4 heads, d = 64)",
       ylabel="peak tensor memory (MB)", title="Extra memory of attention: N² when S is written out, N when tiled")
ax.set_xticks(lengths, [str(n) for n in lengths])
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# The measured growth is the claim: the naive path's memory grows as $N^2$ (the two $N\times N$
# float32 matrices, $S$ and $P$), the tiled path's as $N$ — the output and the logsumexp, on top of a
# constant: the temporaries of one 256×256 tile. SDPA's CPU kernel is tiled too.
#
# **Causal tiles.** With square tiles, a causal mask leaves $T(T+1)/2$ of the $T^2$ tiles for $T$
# tiles per side: about half. We count them, and time the blocked path with and without the mask.

# %%
# NBVAL_CHECK_OUTPUT
n, block = 2048, 128
full, causal_tiles = tiles_visited(n, n, block, block), tiles_visited(n, n, block, block, causal=True)
t_side = n // block
assert full == t_side**2 and causal_tiles == t_side * (t_side + 1) // 2
print(f"✓ N = {n}, tiles {block}×{block}: {causal_tiles} of {full} tiles visited when causal "
      f"({causal_tiles / full:.3f} of them, T(T+1)/2 of T² for T = {t_side})")

# %%
qm, km, vm = (torch.randn(1, 4, n, 64) for _ in range(3))
seconds = {}
with torch.no_grad():
    for causal in (False, True):
        fn = lambda: flash_attention(qm, km, vm, causal=causal, block_m=block, block_n=block)  # noqa: E731
        fn()
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        seconds[causal] = min(runs)
print(f"blocked torch forward, N = {n}: full {seconds[False] * 1e3:.0f} ms, causal {seconds[True] * 1e3:.0f} ms, "
      f"speed-up {seconds[False] / seconds[True]:.2f}× for {full / causal_tiles:.2f}× fewer tiles")
print("paper (A100, the same kernel with and without skipping masked tiles): about 1.7–1.8×")

# %% [markdown]
# The time follows the tile count closely on this CPU; the paper's GPU figure is lower than the
# ideal 2× because the diagonal tiles pay for the mask and because the last query blocks, which
# have the most work, set the finishing time.
#
# **Training through it.** The point of an exact kernel is that swapping it in changes nothing. The
# workbench's decoder (section 00.3) takes the kernel as its attention backend (`attention="flash"`,
# registered by `lib.attention`). We train the same two-layer character model on the pydoc text,
# once with PyTorch's SDPA and once with the book's flash attention, from the same initial weights
# on the same batches.

# %%
corpus = load_corpus("pydoc")
train_text, _ = train_val_split(corpus)
tok = CharTokenizer.from_text(corpus)
train_ids = tok.encode(train_text)
curves = {}
for backend in ("sdpa", "flash"):
    lib.seed_everything(0)
    model = Decoder(DecoderConfig(vocab_size=tok.vocab_size, d_model=128, n_layers=2, n_heads=4, max_seq_len=128,
                                  attention=backend))
    history = train(model, random_batches(train_ids, 8, 128, seed=0),
                    TrainConfig(steps=50, lr=3e-3, warmup_steps=10, seed=0, progress=False))
    curves[backend] = np.array(history.train_loss)
    print(f"{backend:5s}: loss {curves[backend][0]:.3f} → {curves[backend][-1]:.4f} in {history.seconds:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
lib.agree("training loss, flash backend vs SDPA, 50 steps", curves["flash"], curves["sdpa"], atol=1e-4, rtol=0.0,
          reason="same math in fp32; rounding differences grow slowly through 50 Adam steps")
print("✓ the loss curves coincide: the backend is a drop-in replacement")

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.2))
ax.plot(curves["sdpa"], label="torch SDPA")
ax.plot(curves["flash"], ls="--", label="lib flash attention")
ax.set(xlabel="step", ylabel="training loss (nats per character)", title="A 2-layer char LM trained through either backend")
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# ## Benchmark
#
# On the CPU we time, side by side on the same inputs (one sequence, 4 heads, $d = 64$, float32):
# the NumPy reference, naive PyTorch, the book's blocked path and PyTorch's fused SDPA, forward and
# backward. The blocked path is Python looping over tiles, so its cost per tile is a dozen small
# PyTorch calls; first, how that overhead depends on the tile size:

# %%
qm, km, vm = (torch.randn(1, 4, 1024, 64) for _ in range(3))
with torch.no_grad():
    for block in (64, 128, 256, 512):
        fn = lambda: flash_attention(qm, km, vm, block_m=block, block_n=block)  # noqa: E731
        fn()
        start = time.perf_counter()
        for _ in range(3):
            fn()
        print(f"tiles {block:3d}×{block:<3d}: {tiles_visited(1024, 1024, block, block):3d} tiles, "
              f"{(time.perf_counter() - start) / 3 * 1e3:6.1f} ms per forward")

# %% [markdown]
# Small tiles are what a GPU wants (they fit in its registers and shared memory); on a CPU each tile
# costs a fixed Python overhead, so the benchmark runs the blocked path with 256×256 tiles (its
# default is 64×64, the GPU's size). `make bench` records the same tables in `docs/bench/cpu.csv`.

# %%
lib.show(attention_table)

# %%
for backward in (False, True):
    attention_table(1, 4, 1024, 64, causal=False, backward=backward).show()
    print()

# %% [markdown]
# SDPA is the bar: a C++ kernel that tiles, fuses and vectorizes. The blocked PyTorch path exists to
# be read and differentiated; what makes attention fast is the Triton kernel on a GPU, which
# `make bench-gpu` times against SDPA's FlashAttention backend (bf16 and fp16, causal and not,
# N = 1k…16k, d = 64 and 128, TFLOP/s and % of the H200's peak) and writes to `docs/bench/gpu-h200.csv`.
# The paper's figures, for comparison when that table exists:

# %%
paper = [
    ("FlashAttention-2 vs FlashAttention", "1.7–3.0× faster (A100)"),
    ("vs Triton FlashAttention / plain PyTorch", "1.3–2.5× / 3–10× faster"),
    ("forward, % of A100 peak", "up to 73 % (≈ 230 TFLOP/s fwd+bwd)"),
    ("H100, without Hopper-specific instructions", "up to ≈ 335 TFLOP/s"),
    ("GPT-style training", "225 TFLOP/s per A100, 72 % model FLOPs utilization"),
]
for what, figure in paper:
    print(f"{what:45s} {figure}")

# %% [markdown]
# ## Exercises
#
# In `exercises/01_attention.py` (open it with `make lab`):
#
# * **01.1a** `online_softmax_step(m, l, acc, s_tile, v_tile)` — fold one key tile into the running
#   state of every query row: the inner loop of the forward pass, safe for fully masked rows and for
#   logits around $\pm 10^4$. Check it with `check("01.1a", online_softmax_step)`.
#
# Going further (no check): split the Triton forward's key loop of `kernels/flash_attn.py` in two —
# the tiles entirely below the diagonal without a mask, then the diagonal tiles with it — as
# FlashAttention-2 does; check it under the interpreter with the tests of
# `tests/test_flash_attn_kernel.py` and, on a GPU, time it with `make bench-gpu`.
