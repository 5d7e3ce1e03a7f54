"""Section 00.1: the PyTorch path and the fused Triton kernels against the float64 NumPy reference.

Tests marked ``kernel`` run on :func:`lib.device.kernel_device`: on the CPU through Triton's
interpreter (tests/conftest.py), so shapes stay small, and on a GPU for real (``make bench-gpu``).
"""

import numpy as np
import pytest
import torch

import kernels.softmax as fused
from lib import agree, agree_flash_rule
from lib.device import kernel_device
from lib.softmax import (
    reference_softmax,
    reference_softmax_backward,
    sample_logits,
    softmax,
    softmax_backward,
    softmax_backward_torch,
    softmax_torch,
)
from lib.testing import nan_like, numpy64

DEVICE = kernel_device()
FP64 = dict(atol=1e-14, rtol=1e-12, reason="float64 vs float64: summation order only")
FP32 = dict(atol=1e-6, rtol=1e-5, reason="float32 rounding of exp and one row sum")

# (rows, n): a power of two, an awkward shape, one row, one column, rows shorter than any block
SHAPES = [(4, 64), (113, 203), (1, 203), (5, 1), (3, 7)]


def plain_half_backward(y: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """The baseline of the flash rule: softmax's backward evaluated in the inputs' own dtype."""
    return y * (dy - (y * dy).sum(dim=-1, keepdim=True))


# ----------------------------------------------------------------------------- PyTorch path


@pytest.mark.parametrize("shape", SHAPES)
def test_torch_path_matches_reference(shape):
    x = sample_logits(*shape, dtype=torch.float64)
    agree(f"softmax_torch float64 {shape}", softmax_torch(x), reference_softmax(x.numpy()), **FP64)
    x32 = x.float()  # the reference sees the float32 values, not the float64 ones they were rounded from
    agree(f"softmax_torch float32 {shape}", softmax_torch(x32), reference_softmax(x32.numpy()), **FP32)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_along_any_dim(dim):
    x = 3.0 * torch.randn(4, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = np.moveaxis(reference_softmax(np.moveaxis(x.numpy(), dim, -1)), -1, dim)
    agree(f"softmax dim={dim}", softmax(x, dim), expected, **FP64)


def test_non_contiguous_views():
    x = sample_logits(12, 40)
    for name, view in [("strided columns", x[:, ::3]), ("transpose", x.t())]:
        assert not view.is_contiguous()
        agree(f"softmax of a {name} view", softmax(view), reference_softmax(view.numpy()), **FP32)


def test_masked_rows_give_zeros_where_torch_gives_nan():
    x = torch.full((2, 5), float("-inf"))
    x[1, 2] = 0.0
    y = softmax(x)
    assert torch.equal(y[0], torch.zeros(5))
    assert torch.equal(y[1], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
    assert torch.isnan(torch.softmax(x, dim=-1)[0]).all()  # the documented difference


def test_large_logits_do_not_overflow():
    x = torch.tensor([[1e4, 1e4 - 1.0, -1e4], [-1e4, -1e4, -1e4]])
    agree("softmax of ±1e4 logits", softmax(x), reference_softmax(x.numpy()), **FP32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_torch_path_by_flash_rule(dtype):
    x = sample_logits(33, 203, special_rows=False).to(dtype)
    ours = softmax(x)
    assert ours.dtype == dtype
    agree_flash_rule(f"softmax {dtype}", ours, torch.softmax(x, dim=-1), reference_softmax(x.double().numpy()))


def test_gradcheck_float64():
    x = sample_logits(3, 11, dtype=torch.float64, special_rows=False).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: softmax(t, -1), (x,))
    assert torch.autograd.gradcheck(lambda t: softmax(t, 0), (x,))


def test_backward_matches_reference():
    x = sample_logits(17, 45).requires_grad_()
    dy = torch.randn(17, 45, generator=torch.Generator().manual_seed(2))
    y = softmax(x)
    y.backward(dy)
    expected = reference_softmax_backward(reference_softmax(x.detach().numpy()), dy.numpy())
    agree("softmax backward float32", x.grad, expected, **FP32)
    assert torch.equal(x.grad[0], torch.zeros(45))  # a fully masked row passes no gradient


# ----------------------------------------------------------------------------- Triton kernels


@pytest.mark.kernel
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_forward_float32(shape):
    x = sample_logits(*shape).to(DEVICE)
    y = fused.softmax_forward(x, out=nan_like(x))
    agree(f"kernel forward {shape}", y, reference_softmax(numpy64(x)), **FP32)
    agree(f"kernel vs torch path {shape}", y, softmax_torch(x), **FP32)


@pytest.mark.kernel
@pytest.mark.parametrize("shape", [(4, 64), (9, 203)])
def test_kernel_forward_half_by_flash_rule(shape, half_dtype):
    x = sample_logits(*shape, special_rows=False).to(DEVICE, half_dtype)
    y = fused.softmax_forward(x, out=nan_like(x))
    assert y.dtype == half_dtype
    agree_flash_rule(f"kernel forward {half_dtype} {shape}", y, torch.softmax(x, dim=-1), reference_softmax(numpy64(x)))


@pytest.mark.kernel
def test_kernel_forward_masked_and_large_rows_float16():
    x = sample_logits(4, 50).to(DEVICE, torch.float16)
    agree("kernel forward fp16 special rows", fused.softmax_forward(x, out=nan_like(x)),
          reference_softmax(numpy64(x)), atol=1e-3, rtol=0.0, reason="one fp16 rounding of values ≤ 1")


@pytest.mark.kernel
def test_kernel_forward_strided_input_and_output():
    base = sample_logits(20, 30).to(DEVICE)
    x = base.t()                                         # (30, 20), column stride 30
    out = nan_like(base).t()                             # a non-contiguous output view
    fused.softmax_forward(x, out=out)
    agree("kernel forward, transposed in and out", out, reference_softmax(numpy64(x)), **FP32)
    x = base[:, 1::2]                                    # (20, 15), column stride 2
    agree("kernel forward, strided columns", fused.softmax_forward(x, out=nan_like(x)),
          reference_softmax(numpy64(x)), **FP32)


@pytest.mark.kernel
@pytest.mark.parametrize("shape", [(4, 64), (13, 203), (1, 5)])
def test_kernel_backward_float32(shape):
    y = softmax_torch(sample_logits(*shape)).to(DEVICE)
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    dx = fused.softmax_backward(y, dy, out=nan_like(y))
    agree(f"kernel backward {shape}", dx, reference_softmax_backward(numpy64(y), numpy64(dy)), **FP32)
    agree(f"kernel backward vs torch path {shape}", dx, softmax_backward_torch(y, dy), **FP32)


@pytest.mark.kernel
def test_kernel_backward_half_by_flash_rule(half_dtype):
    y = softmax_torch(sample_logits(9, 203, special_rows=False)).to(DEVICE, half_dtype)
    dy = torch.randn(9, 203, generator=torch.Generator().manual_seed(4)).to(DEVICE, half_dtype)
    dx = fused.softmax_backward(y, dy, out=nan_like(y))
    agree_flash_rule(f"kernel backward {half_dtype}", dx, plain_half_backward(y, dy),
                     reference_softmax_backward(numpy64(y), numpy64(dy)))


@pytest.mark.kernel
@pytest.mark.parametrize("max_fused_cols", [fused.MAX_FUSED_COLS, 8])
def test_lib_kernel_route_forward_and_backward(kernel_dispatch, monkeypatch, max_fused_cols):
    """3-d input along dim 1 through lib.softmax's kernel route; rows longer than 8 take 00.2's kernel."""
    monkeypatch.setattr(fused, "MAX_FUSED_COLS", max_fused_cols)
    x = sample_logits(6 * 3, 11).reshape(6, 3, 11).transpose(1, 2).to(DEVICE).requires_grad_()  # (6, 11, 3), a view
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    y = softmax(x, dim=1)
    y.backward(dy)
    y_ref = reference_softmax(numpy64(x.movedim(1, -1)))
    agree("lib kernel route forward", y.movedim(1, -1), y_ref, **FP32)
    agree("lib kernel route backward", x.grad.movedim(1, -1),
          reference_softmax_backward(y_ref, numpy64(dy.movedim(1, -1))), **FP32)


@pytest.mark.kernel
def test_float64_stays_on_torch_path_under_kernel_dispatch(kernel_dispatch):
    x = sample_logits(3, 9, dtype=torch.float64).to(DEVICE)
    agree("float64 under kernel dispatch", softmax(x), reference_softmax(numpy64(x)), **FP64)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: softmax([1.0, 2.0]), TypeError, "x: expected a torch.Tensor"),
        (lambda: softmax(torch.arange(4)), TypeError, "x: expected a floating-point tensor, got torch.int64"),
        (lambda: softmax(torch.tensor(1.0)), ValueError, "x: expected at least one dimension"),
        (lambda: softmax(torch.ones(2, 3), dim=2), ValueError, r"dim: expected an int in \[-2, 2\)"),
        (lambda: softmax(torch.ones(2, 0)), ValueError, "x: expected a non-empty dimension"),
        (lambda: softmax_backward(torch.ones(2, 3), torch.ones(3, 2)), ValueError, "dy: expected shape"),
        (lambda: fused.softmax_forward(torch.ones(2, 3, 4)), ValueError, r"x: expected a 2-d array \(rows, n\)"),
        (lambda: fused.softmax_forward(torch.ones(2, 3, dtype=torch.float64)), TypeError, "x: expected one of"),
        (lambda: fused.softmax_forward(torch.ones(2, 0)), ValueError, "x: expected at least one column"),
        (lambda: fused.softmax_forward(torch.ones(1, fused.MAX_FUSED_COLS + 1)), ValueError, "x: expected at most"),
        (lambda: fused.softmax_forward(torch.ones(2, 3), out=torch.ones(3, 2)), ValueError, "out: expected shape"),
        (lambda: fused.softmax_backward(torch.ones(2, 3), torch.ones(2, 4)), ValueError, "dy: expected shape"),
    ],
)
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()
