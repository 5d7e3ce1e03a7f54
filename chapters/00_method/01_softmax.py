# %% [markdown]
# # 00.1 Softmax, from NumPy to a fused kernel
#
# Every section of this book takes one idea through the same five stages: a float64 **NumPy
# reference** that is short enough to trust, a **PyTorch implementation** in `lib/` that the rest of
# the book imports, a **Triton kernel** where fusion or tiling is the point, **agreement checks**
# that assert all of them compute the same thing, and a **benchmark** that times them side by side.
# This section walks the whole path once on the smallest interesting operation: the softmax of
# each row of a matrix.
#
# Nothing here is new research; it is the method. The one trick worth remembering — subtract the
# row maximum — returns in every attention kernel of the book.

# %%
import kernels  # noqa: F401  first: on a machine without a GPU it switches Triton to its CPU interpreter

import matplotlib.pyplot as plt
import numpy as np
import torch

import kernels.softmax as fused
import lib
from lib.benchmarks.softmax import softmax_table
from lib.softmax import (
    reference_softmax,
    reference_softmax_backward,
    sample_logits,
    softmax,
    softmax_torch,
)
from lib.testing import nan_like

rng = lib.seed_everything(0)  # seeds Python, NumPy and torch; returns a NumPy Generator

# %% [markdown]
# ## Idea
#
# The softmax turns a row of scores $x \in \mathbb{R}^n$ into a probability distribution:
#
# $$\operatorname{softmax}(x)_j = \frac{e^{x_j}}{\sum_{k=1}^{n} e^{x_k}}.$$
#
# Multiplying numerator and denominator by $e^{-c}$ changes nothing, for any constant $c$. The
# choice $c = m = \max_k x_k$ makes every exponent $x_j - m \le 0$, so every $e^{x_j - m}$ lies in
# $(0, 1]$ and the largest is exactly 1; the denominator lies in $[1, n]$. Nothing can overflow and
# nothing divides by zero:
#
# $$y_j = \frac{e^{x_j - m}}{\sum_{k} e^{x_k - m}}, \qquad m = \max_k x_k.$$
#
# Without the shift, $e^{x}$ overflows as soon as $x > \ln(\text{largest float})$: about 88.7 in
# float32 and only 11.1 in float16. Attention scores cross those lines routinely.

# %%
x = torch.tensor([[1000.0, 999.0, 0.0]])
naive = torch.exp(x) / torch.exp(x).sum(dim=-1, keepdim=True)
print("naive :", naive)
print("stable:", softmax(x))
for dtype in (torch.float16, torch.float32):
    print(f"exp overflows above x = ln(max {dtype}) = {np.log(torch.finfo(dtype).max):.2f}")

# %% [markdown]
# **Masked rows.** Attention hides positions by setting their scores to $-\infty$. A row in which
# *every* position is masked has no distribution: $m = -\infty$ and $x_j - m$ is NaN.
# `torch.softmax` returns NaN there; the book returns zeros (as FlashAttention does) by using the
# shift $0$ when $m = -\infty$ and dividing by 1 when the sum is 0.
#
# **Backward.** The Jacobian of the softmax is $\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)$.
# For an upstream gradient $dy$ the vector–Jacobian product therefore needs only the output $y$:
#
# $$dx = y \odot \bigl(dy - \langle y, dy\rangle\bigr), \qquad \langle y, dy\rangle = \textstyle\sum_k y_k\, dy_k.$$

# %% [markdown]
# ## NumPy reference
#
# The reference works in float64 along the last axis and is the ground truth for every other
# implementation in this chapter. It is written for the reader, not for speed.

# %%
lib.show(reference_softmax)

# %%
lib.show(reference_softmax_backward)

# %% [markdown]
# ## The PyTorch implementation
#
# `lib.softmax.softmax_torch` is the same formula as whole-tensor PyTorch operations, along any
# axis. Half-precision inputs are computed in float32 and rounded once at the end; rounding every
# exponential and every partial sum to float16 (about three significant digits) would add an error
# that grows with the row length.

# %%
lib.show(softmax_torch)

# %% [markdown]
# The function the rest of the book calls is `lib.softmax.softmax`. It validates its input, sends
# CUDA tensors to the Triton kernels and everything else to `softmax_torch`, and is differentiable
# through an `autograd.Function` whose backward is the formula above. That backward needs only the
# saved output, so every way of computing a softmax — this one, the streaming one of section 00.2,
# a kernel — shares it.

# %%
lib.show(softmax)

# %%
lib.show(lib.softmax.SoftmaxFunction)

# %% [markdown]
# ## The Triton kernel
#
# **Count the memory traffic first.** A softmax does one `exp` per element; a GPU does that far
# faster than it can move the element to and from its memory, so the time is set by the bytes
# moved. Each line of `softmax_torch` is a separate pass over memory: `amax` reads $x$, the
# subtraction reads $x$ and writes a temporary, `exp` reads and writes, `sum` reads, the division
# reads and writes — 5 reads and 3 writes per element. A *fused* kernel loads each row once, keeps
# it in registers, and writes the result once: 1 read and 1 write, a quarter of the traffic.

# %%
rows, n, bytes_per = 4096, 4096, 4  # a float32 matrix
hbm_bytes_per_s = 4.8e12            # H200 memory bandwidth
for name, accesses in [("plain PyTorch, 5 reads + 3 writes", 8), ("fused kernel, 1 read + 1 write", 2)]:
    moved = accesses * rows * n * bytes_per
    print(f"{name:34s} {moved / 1e9:6.3f} GB, at least {moved / hbm_bytes_per_s * 1e6:5.1f} µs "
          f"at {hbm_bytes_per_s / 1e12:g} TB/s")

# %% [markdown]
# The kernel runs one **program** per row. `tl.arange(0, BLOCK)` gives the column indices of a
# block that covers the whole row (`BLOCK` is the next power of two $\ge n$, a Triton requirement);
# lanes past the end of the row are **masked**: they load $-\infty$, which adds $e^{-\infty} = 0$
# to the sum, and they are never stored. Values are converted to float32 in registers whatever the
# storage type, and a row of $-\infty$ ends with a sum of 0, where dividing by 1 instead gives zeros.
# The row offset is computed in int64, because `row * stride` overflows 32 bits on large inputs.

# %%
lib.show(fused.softmax_forward_kernel)

# %% [markdown]
# The launcher takes torch tensors, checks them, allocates the output and launches a grid of
# `rows` programs. It passes both strides of each tensor, so a transposed or sliced view runs
# without a copy (Triton specialises a stride equal to 1, so the contiguous case pays nothing).
# There is no autotuning: the number of warps follows from `BLOCK`. A row longer than
# `MAX_FUSED_COLS` would no longer fit in registers; `lib.softmax` sends such rows to the streaming
# kernel of section 00.2.

# %%
lib.show(fused.softmax_forward)
print("MAX_FUSED_COLS =", fused.MAX_FUSED_COLS)

# %% [markdown]
# The backward kernel has the same shape: one program per row loads $y$ and $dy$ once, reduces
# $\langle y, dy\rangle$ in registers and writes $dx$ once.

# %%
lib.show(fused.softmax_backward_kernel)

# %% [markdown]
# ## Agreement
#
# Each check runs an implementation and the float64 reference on the same inputs and asserts
# $|a - e| \le \text{atol} + \text{rtol}\,|e|$ elementwise with `lib.agree`, which prints one
# verdict line (the cell fails otherwise). The inputs come from `sample_logits`: seeded
# $\mathcal{N}(0, 3^2)$ scores whose first rows are fully masked, half masked, and of size
# $\pm 10^4$. The shapes are a power of two, an awkward $113 \times 203$, a single row, and a
# non-contiguous view.

# %%
FP64 = dict(atol=1e-14, rtol=1e-12, reason="float64 vs float64: summation order only")
FP32 = dict(atol=1e-6, rtol=1e-5, reason="float32 rounding of exp and one row sum")

square = sample_logits(256, 256)
cases = {
    "256×256": square,
    "113×203": sample_logits(113, 203, seed=1),
    "1×203": sample_logits(1, 203, seed=2),
    "transposed view": square.t(),
}

# %%
# NBVAL_CHECK_OUTPUT
for name, x in cases.items():
    x64 = x.double()
    lib.agree(f"softmax_torch float64, {name}", softmax_torch(x64), reference_softmax(x64.numpy()), **FP64)
    lib.agree(f"softmax_torch float32, {name}", softmax_torch(x), reference_softmax(x.numpy()), **FP32)

# %% [markdown]
# Fully masked rows give zeros here and NaN in `torch.softmax`; logits of $\pm 10^4$ are fine.

# %%
# NBVAL_CHECK_OUTPUT
x = cases["113×203"]
y = softmax(x)
assert torch.equal(y[0], torch.zeros(203)) and torch.isnan(torch.softmax(x, dim=-1)[0]).all()
print("fully masked row: lib.softmax gives zeros, torch.softmax gives NaN")
for row, name in [(1, "partly masked row"), (2, "logits of ±1e4")]:
    lib.agree(f"softmax, {name}", y[row], reference_softmax(x[row].numpy()), **FP32)

# %% [markdown]
# Gradients: `torch.autograd.gradcheck` compares the analytic backward with finite differences in
# float64, and the float32 backward is checked against the NumPy formula.

# %%
# NBVAL_CHECK_OUTPUT
x = cases["113×203"].clone().requires_grad_()
dy = torch.randn(x.shape)
softmax(x).backward(dy)
expected = reference_softmax_backward(reference_softmax(x.detach().numpy()), dy.numpy())
lib.agree("softmax backward float32, 113×203", x.grad, expected, **FP32)
x64 = sample_logits(4, 9, dtype=torch.float64, special_rows=False).requires_grad_()
assert torch.autograd.gradcheck(softmax, (x64,))
print("✓ gradcheck: lib.softmax backward matches finite differences in float64")

# %% [markdown]
# The Triton kernels run here through Triton's CPU interpreter (slow, but exact in float32). Output
# buffers are filled with NaN first, so an element the kernel forgets to write fails the check.

# %%
# NBVAL_CHECK_OUTPUT
y = softmax_torch(cases["113×203"])
dy = torch.randn(y.shape)
dx = fused.softmax_backward(y, dy, out=nan_like(y))
lib.agree("Triton backward float32, 113×203", dx, reference_softmax_backward(y.numpy(), dy.numpy()), **FP32)
for name, x in cases.items():
    y = fused.softmax_forward(x, out=nan_like(x))
    lib.agree(f"Triton forward float32, {name}", y, reference_softmax(x.numpy()), **FP32)

# %% [markdown]
# In float16 no implementation can be exact, so the test is relative (the FlashAttention rule):
# the kernel's error against float64 may be at most twice that of plain PyTorch in the same dtype,
# plus two float16 ulps. The forward baseline is `torch.softmax` on float16; the backward baseline
# is the formula evaluated in float16.

# %%
# NBVAL_CHECK_OUTPUT
x16 = sample_logits(64, 203, special_rows=False).half()
y16 = fused.softmax_forward(x16, out=nan_like(x16))
dy16 = torch.randn(y16.shape).half()
checks = {
    "Triton forward float16": (y16, torch.softmax(x16, dim=-1), reference_softmax(x16.numpy())),
    "Triton backward float16": (
        fused.softmax_backward(y16, dy16, out=nan_like(y16)),
        y16 * (dy16 - (y16 * dy16).sum(dim=-1, keepdim=True)),
        reference_softmax_backward(y16.numpy(), dy16.numpy()),
    ),
}
for name, (ours, plain_fp16, ref64) in checks.items():
    lib.agree_flash_rule(name, ours, plain_fp16, ref64)

# %% [markdown]
# ## Experiment: where the naive formula breaks
#
# The claim of this section is that subtracting the maximum removes overflow entirely, and that
# without it a row breaks exactly when its largest score passes $\ln(\text{largest float})$. We
# draw rows of 512 scores at growing scales and record which rows give a non-finite output.

# %%
def naive_softmax(x: torch.Tensor) -> torch.Tensor:
    """exp(x) / sum(exp(x)) in x's own dtype: the formula without the shift."""
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


scales = np.logspace(0, 3, 31)
rows_per_scale = 64
base = torch.randn(len(scales), rows_per_scale, 512)
failed = {}
for dtype in (torch.float16, torch.float32):
    x = (torch.tensor(scales, dtype=torch.float32)[:, None, None] * base).to(dtype)
    row_max = x.amax(dim=-1).float()
    broken_naive = ~torch.isfinite(naive_softmax(x)).all(dim=-1)
    broken_stable = ~torch.isfinite(softmax(x)).all(dim=-1)
    failed[dtype] = (broken_naive.float().mean(-1), broken_stable.float().mean(-1))
    threshold = np.log(torch.finfo(dtype).max)
    print(f"{str(dtype):14s} ln(max) = {threshold:6.2f} | naive: largest row max that worked "
          f"{row_max[~broken_naive].max():7.2f}, smallest that broke {row_max[broken_naive].min():7.2f} "
          f"| stable: {int(broken_stable.sum())} broken rows of {broken_stable.numel()}")

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.4))
for dtype, style in [(torch.float16, "C0"), (torch.float32, "C1")]:
    naive_frac, stable_frac = failed[dtype]
    name = str(dtype).removeprefix("torch.")
    ax.plot(scales, naive_frac, color=style, marker="o", ms=3, label=f"exp / sum, {name}")
    ax.plot(scales, stable_frac, color=style, ls="--", label=f"max-subtracted, {name}")
ax.set(xscale="log", xlabel="scale of the scores (standard deviation)", ylabel="rows with NaN or inf",
       title="Softmax of 512 scores: overflow without the max shift")
ax.legend(frameon=False)
plt.show()

# %% [markdown]
# Both thresholds land where the arithmetic predicts: a naive float16 row breaks once its largest
# score passes about 11, a float32 row once it passes about 89, and the max-subtracted version
# never breaks. (A row can also break slightly below the line, when several terms close to the
# largest float add up past it.) Scores this large are common in attention — the dot product of two
# random 128-dimensional vectors with unit-variance entries has a standard deviation of
# $\sqrt{128} \approx 11.3$ before the $1/\sqrt{d}$ scaling — which is why no attention kernel
# skips the shift.

# %% [markdown]
# ## Benchmark
#
# `lib.benchmarks.softmax` times the implementations side by side on the same input; `make bench`
# and `make bench-gpu` run the same functions over more shapes. On this CPU, `lib.softmax` runs
# the plain PyTorch path, while `torch.softmax` is a fused, vectorised CPU kernel: the ratio
# between them is the cost of the extra passes over memory. The Triton kernel is not timed here — under
# the interpreter it would measure Python, not the kernel; on a GPU the same table compares it
# with `torch.softmax` and reports the effective bandwidth (bytes of $x$ read plus $y$ written, per
# second).

# %%
lib.show(softmax_table)

# %%
table = softmax_table(sample_logits(1024, 1024, special_rows=False))
table.show()
print(f"\nlib.softmax (plain PyTorch path) takes {1 / table.speedup('lib.softmax', 'torch.softmax'):.1f}× "
      "the time of torch.softmax")

# %% [markdown]
# ## Exercises
#
# The exercises for this chapter are in `exercises/00_method.py` (open it in JupyterLab with
# `make lab`). Implement each function in the cell provided, then run its check, which tests shapes
# first and values second and tells you what is wrong:
#
# * **00.1a** `softmax_rows(x)` — a numerically stable softmax over the last axis of a NumPy array,
#   fully masked rows giving zeros. Check it with `check("00.1a", softmax_rows)`.
# * **00.1b** `softmax_backward(y, dy)` — the vector–Jacobian product $y \odot (dy - \langle y, dy\rangle)$.
#   Check it with `check("00.1b", softmax_backward)`.
#
# Going further (no check): write a Triton kernel that computes a row's softmax and its
# log-sum-exp $m + \ln l$ in the same pass, and test it against `reference_softmax` under the
# interpreter, following `tests/test_softmax.py`.
