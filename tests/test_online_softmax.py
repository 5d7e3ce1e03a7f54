"""Section 00.2: the online (streaming) softmax — NumPy loop, blockwise PyTorch, Triton kernels.

Every version is checked against the one-shot float64 reference of 00.1, with blocks that do and
do not divide the row, a block longer than the row, and rows of -inf and of ±1e4. Tests marked
``kernel`` run on :func:`lib.device.kernel_device` (the interpreter on the CPU, for real on a GPU).
"""

import numpy as np
import pytest
import torch

import kernels.online_softmax as streaming
from lib import agree, agree_flash_rule
from lib.device import kernel_device
from lib.online_softmax import (
    merge_states,
    online_softmax,
    online_softmax_torch,
    online_update,
    reference_merge_states,
    reference_online_softmax,
    reference_online_update,
)
from lib.softmax import reference_softmax, reference_softmax_backward, sample_logits
from lib.testing import nan_like, numpy64

DEVICE = kernel_device()

FP64 = dict(atol=1e-14, rtol=1e-12, reason="float64 vs float64: blockwise vs one-shot rounding only")
FP32 = dict(atol=1e-6, rtol=1e-5, reason="float32 rounding of exp, rescalings and the row sum")
BLOCKS = [1, 7, 128, 1024]  # 1024 > n: the whole row is one block


def random_states(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """States (m, l) of random row slices, including the empty state (-inf, 0) in row 0."""
    x = sample_logits(rows, 9, seed=seed, dtype=torch.float64).numpy()
    return reference_online_update(np.full(rows, -np.inf), np.zeros(rows), x)


# ----------------------------------------------------------------------------- NumPy reference


@pytest.mark.parametrize("block", BLOCKS)
def test_reference_loop_matches_one_shot(block):
    x = sample_logits(6, 203, dtype=torch.float64).numpy()
    agree(f"reference_online_softmax block={block}", reference_online_softmax(x, block), reference_softmax(x), **FP64)


def assert_same_state(name, got, expected):
    np.testing.assert_array_equal(got[0], expected[0])  # a maximum involves no rounding
    agree(name, got[1], expected[1], **FP64)


def test_merge_is_associative_and_commutative_with_identity():
    a, b, c = (random_states(5, seed) for seed in (1, 2, 3))
    ab = reference_merge_states(*a, *b)
    empty = (np.full(5, -np.inf), np.zeros(5))
    assert_same_state("merge is associative", reference_merge_states(*a, *reference_merge_states(*b, *c)),
                      reference_merge_states(*ab, *c))
    assert_same_state("merge is commutative", reference_merge_states(*b, *a), ab)
    assert_same_state("the empty state is the identity", reference_merge_states(*a, *empty), a)


# ----------------------------------------------------------------------------- PyTorch, blockwise


def test_torch_update_and_merge_match_reference():
    x = sample_logits(5, 30, dtype=torch.float64)
    m, l = random_states(5, seed=4)
    m_t, l_t = online_update(torch.from_numpy(m), torch.from_numpy(l), x)
    assert_same_state("online_update", (m_t.numpy(), l_t), reference_online_update(m, l, x.numpy()))
    b = random_states(5, seed=5)
    m_t, l_t = merge_states(torch.from_numpy(m), torch.from_numpy(l), *map(torch.from_numpy, b))
    assert_same_state("merge_states", (m_t.numpy(), l_t), reference_merge_states(m, l, *b))


@pytest.mark.parametrize("block", BLOCKS)
def test_blockwise_torch_matches_reference(block):
    x = sample_logits(6, 203, dtype=torch.float64)
    expected = reference_softmax(x.numpy())
    agree(f"online_softmax_torch float64 block={block}", online_softmax_torch(x, block), expected, **FP64)
    x32 = x.float()
    agree(f"online_softmax float32 block={block}", online_softmax(x32, block), reference_softmax(x32.numpy()), **FP32)


def test_leading_dims_and_half_precision():
    x = sample_logits(12, 50, special_rows=False).reshape(3, 4, 50).half()
    y = online_softmax(x, block=16)
    assert y.dtype == torch.float16 and y.shape == x.shape
    agree_flash_rule("online_softmax fp16", y, torch.softmax(x, dim=-1), reference_softmax(x.numpy()))


def test_gradcheck_float64():
    x = sample_logits(3, 11, dtype=torch.float64, special_rows=False).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: online_softmax(t, 4), (x,))


# ----------------------------------------------------------------------------- Triton kernels


# (rows, n, block): n a multiple of the block, n not a multiple, n shorter than one block, one row
KERNEL_CASES = [(4, 64, 16), (7, 203, 32), (5, 10, 16), (1, 100, 16)]


@pytest.mark.kernel
@pytest.mark.parametrize("rows, n, block", KERNEL_CASES)
def test_looped_kernel_float32(rows, n, block):
    x = sample_logits(rows, n).to(DEVICE)
    y = streaming.online_softmax_forward(x, block=block, out=nan_like(x))
    agree(f"looped kernel ({rows}, {n}) block={block}", y, reference_softmax(numpy64(x)), **FP32)
    agree(f"looped kernel vs torch path ({rows}, {n})", y, online_softmax_torch(x, block), **FP32)


@pytest.mark.kernel
@pytest.mark.parametrize("splits", [1, 3, 8])
@pytest.mark.parametrize("rows, n, block", KERNEL_CASES)
def test_split_kernel_float32(rows, n, block, splits):
    """splits=8 leaves slices of short rows empty: their state (-inf, 0) must merge away."""
    x = sample_logits(rows, n).to(DEVICE)
    y = streaming.online_softmax_split(x, splits=splits, block=block, out=nan_like(x))
    agree(f"split kernel ({rows}, {n}) splits={splits}", y, reference_softmax(numpy64(x)), **FP32)


@pytest.mark.kernel
@pytest.mark.parametrize("kernel", ["online_softmax_forward", "online_softmax_split"])
def test_kernels_half_by_flash_rule(kernel, half_dtype):
    x = sample_logits(6, 203, special_rows=False).to(DEVICE, half_dtype)
    y = getattr(streaming, kernel)(x, block=32, out=nan_like(x))
    assert y.dtype == half_dtype
    agree_flash_rule(f"{kernel} {half_dtype}", y, torch.softmax(x, dim=-1), reference_softmax(numpy64(x)))


@pytest.mark.kernel
def test_kernels_on_strided_views():
    base = sample_logits(40, 30).to(DEVICE)
    for name, x in [("transpose", base.t()), ("strided columns", base[:, ::3])]:
        for kernel in (streaming.online_softmax_forward, streaming.online_softmax_split):
            y = kernel(x, block=16, out=nan_like(x))
            agree(f"{kernel.__name__} on a {name} view", y, reference_softmax(numpy64(x)), **FP32)


@pytest.mark.kernel
def test_lib_kernel_route(kernel_dispatch):
    """lib.online_softmax on the kernel route, forward and backward: block 7 becomes 8."""
    x = sample_logits(6, 45).reshape(2, 3, 45).to(DEVICE).requires_grad_()
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    y = online_softmax(x, block=7)
    y.backward(dy)
    y_ref = reference_softmax(numpy64(x))
    agree("lib.online_softmax kernel route forward", y, y_ref, **FP32)
    agree("lib.online_softmax kernel route backward", x.grad, reference_softmax_backward(y_ref, numpy64(dy)), **FP32)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: online_softmax(torch.ones(2, 3), block=0), ValueError, "block: expected a positive int, got 0"),
        (lambda: online_softmax(torch.ones(2, 3), block=2.0), ValueError, "block: expected a positive int"),
        (lambda: online_softmax(torch.ones(2, 0)), ValueError, "x: expected a non-empty dimension"),
        (lambda: online_softmax(torch.arange(3)), TypeError, "x: expected a floating-point tensor"),
        (lambda: reference_online_softmax(np.ones(3), 2), ValueError, r"x: expected a 2-d array \(rows, n\)"),
        (lambda: streaming.online_softmax_forward(torch.ones(3)), ValueError, "x: expected a 2-d array"),
        (lambda: streaming.online_softmax_forward(torch.ones(2, 3), block=-1), ValueError, "block: expected"),
        (lambda: streaming.online_softmax_split(torch.ones(2, 3), splits=0), ValueError, "splits: expected"),
        (lambda: streaming.online_softmax_split(torch.ones(2, 3).double()), TypeError, "x: expected one of"),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()
