"""lib.validation and lib.testing: the checks and test helpers every section shares.

Each check must pass on good input and raise, on bad input, a one-line error that starts with
the argument's name.
"""

import numpy as np
import pytest
import torch

from lib.testing import nan_like, numpy64
from lib.validation import (
    check_dim,
    check_dtype,
    check_floating_tensor,
    check_ndim,
    check_positive_int,
    check_same_device,
    check_same_shape,
    check_tensor,
)

HALF_AND_SINGLE = (torch.float16, torch.float32)


def test_good_input_passes():
    x = torch.ones(2, 3)
    check_tensor("q", x)
    check_dim(-2, x.ndim)
    check_floating_tensor("q", x, 1)
    check_ndim("q", x, "rows, n")
    check_ndim("q", np.ones((2, 3)), "rows, n")
    check_dtype("q", x, HALF_AND_SINGLE)
    check_same_shape("k", torch.zeros(2, 3), "q", x)
    check_same_shape("dy", np.zeros((2, 3)), "y", np.ones((2, 3)))
    check_same_device("k", torch.zeros(1), "q", x)
    check_positive_int("block", 1)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: check_tensor("q", [1.0]), TypeError, "q: expected a torch.Tensor, got list"),
        (lambda: check_dim(2, 2), ValueError, r"dim: expected an int in \[-2, 2\) for a 2-d tensor, got 2"),
        (lambda: check_dim(True, 2), ValueError, "dim: expected an int .*, got True"),
        (lambda: check_floating_tensor("q", np.ones(3), -1), TypeError, "q: expected a torch.Tensor, got ndarray"),
        (lambda: check_floating_tensor("q", torch.arange(3), -1), TypeError,
         "q: expected a floating-point tensor, got torch.int64"),
        (lambda: check_floating_tensor("q", torch.tensor(1.0), -1), ValueError, "q: expected at least one dimension"),
        (lambda: check_floating_tensor("q", torch.ones(2, 3), 2), ValueError, r"dim: expected an int in \[-2, 2\)"),
        (lambda: check_floating_tensor("q", torch.ones(2, 0), 1), ValueError,
         r"q: expected a non-empty dimension 1, got shape \(2, 0\)"),
        (lambda: check_ndim("q", torch.ones(3), "rows, n"), ValueError,
         r"q: expected a 2-d array \(rows, n\), got shape \(3,\)"),
        (lambda: check_dtype("q", torch.ones(2, dtype=torch.float64), HALF_AND_SINGLE), TypeError,
         "q: expected one of float16, float32, got torch.float64"),
        (lambda: check_same_shape("k", torch.ones(3, 2), "q", torch.ones(2, 3)), ValueError,
         r"k: expected shape \(2, 3\) \(the shape of q\), got \(3, 2\)"),
        (lambda: check_same_device("k", torch.ones(1, device="meta"), "q", torch.ones(1)), ValueError,
         "k: expected a tensor on cpu \\(like q\\), got one on meta"),
        (lambda: check_positive_int("block", 0), ValueError, "block: expected a positive int, got 0"),
        (lambda: check_positive_int("block", 2.0), ValueError, "block: expected a positive int, got 2.0"),
        (lambda: check_positive_int("block", True), ValueError, "block: expected a positive int, got True"),
    ],
)
def test_each_check_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_nan_like_keeps_shape_dtype_and_device():
    x = torch.ones(2, 3, dtype=torch.float16)[:, ::2]
    out = nan_like(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isnan(out).all()


def test_numpy64_takes_any_dtype_exactly():
    x = torch.tensor([1.0 / 3.0, -2.5, float("-inf")], dtype=torch.bfloat16)
    got = numpy64(x)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, x.float().numpy())
