"""The causal activation of 01.6: NumPy loops ↔ batched PyTorch, causality, continuation, gradients, bad input."""

import numpy as np
import pytest
import torch

from lib import agree
from lib.mixers.causal_activation import (
    MODES,
    CausalActivation,
    Past,
    causal_activation_np,
    causal_mean_np,
    causal_pair_reduce_np,
)

EXACT = dict(atol=0.0, rtol=0.0, reason="min and max select an input and round nothing: exact in fp32")
HALF_SUM = dict(atol=0.0, rtol=1e-7, reason="(a + b)/2 in fp32 vs float64: one rounding of the sum")
MEAN = dict(atol=1e-6, rtol=1e-6, reason="fp32 cumsum over ≤ 203 terms of size ~1, divided by t")
SHAPES = [(2, 64, 32), (3, 113, 59), (1, 1, 7), (203, 5)]  # power of two, awkward, one position, no batch


def sample(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the references


def test_references_follow_the_definition_on_a_tiny_example():
    x = np.array([[3.0, -1.0], [1.0, 2.0], [5.0, 0.0]])  # T = 3, D = 2
    np.testing.assert_array_equal(causal_pair_reduce_np(x, "min"), [[3, -1], [1, -1], [1, 0]])
    np.testing.assert_array_equal(causal_pair_reduce_np(x, "max"), [[3, -1], [3, 2], [5, 2]])
    np.testing.assert_array_equal(causal_pair_reduce_np(x, "mean"), [[3, -1], [2, 0.5], [3, 1]])
    np.testing.assert_allclose(causal_mean_np(x), [[3, -1], [2, 0.5], [3, 1 / 3]], rtol=1e-15)
    np.testing.assert_allclose(causal_activation_np(x, "min", True), [[6, -2], [3, -0.5], [4, 1 / 3]], rtol=1e-15)


# ----------------------------------------------------------------------------- PyTorch vs the references


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_pair_reduce_matches_reference(mode, shape):
    x = sample(shape)
    expected = causal_pair_reduce_np(x.numpy().astype(np.float64), mode)
    tol = HALF_SUM if mode == "mean" else EXACT
    agree(f"pair {mode} fp32 {shape}", CausalActivation(mode)(x), expected, **tol)


@pytest.mark.parametrize("shape", SHAPES)
def test_context_matches_reference(shape):
    x = sample(shape, seed=1)
    expected = causal_activation_np(x.numpy().astype(np.float64), "min", context=True)
    agree(f"min + context fp32 {shape}", CausalActivation("min", context=True)(x), expected, **MEAN)


def test_non_contiguous_input():
    x = sample((3, 40, 24)).transpose(0, 1)[:, ::2]  # (40, 2, 24) → sequence axis of length 2; a strided view
    assert not x.is_contiguous()
    expected = causal_activation_np(x.numpy().astype(np.float64), "max", context=True)
    agree("max + context, strided view", CausalActivation("max", True)(x), expected, **MEAN)


# ----------------------------------------------------------------------------- causality and continuation


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("context", [False, True])
def test_future_leaves_the_past_bit_identical(mode, context):
    act, x = CausalActivation(mode, context), sample((2, 50, 16))
    y = act(x)
    for t in (0, 17, 48):
        changed = x.clone()
        changed[:, t + 1:] = 100.0 * sample((2, 49 - t, 16), seed=t + 1)
        assert torch.equal(act(changed)[:, : t + 1], y[:, : t + 1]), f"position ≤ {t} saw the future"
        assert not torch.equal(act(changed)[:, t + 1], y[:, t + 1])  # and the next position does see it


@pytest.mark.parametrize("mode", MODES)
def test_continuation_from_past_equals_whole_sequence(mode):
    act, x = CausalActivation(mode, context=True), sample((2, 30, 8))
    whole = act(x)
    for cut in (1, 13, 29):
        past = Past(x[:, cut - 1], x[:, :cut].sum(dim=1), cut)
        agree(f"continuation after {cut}", act(x[:, cut:], past), whole[:, cut:], **MEAN)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("context", [False, True])
def test_gradcheck_float64(mode, context):
    # distinct values and distinct neighbours (no ties), so min and max are differentiable here
    order = torch.randperm(108, generator=torch.Generator().manual_seed(0))
    x = torch.linspace(-2.0, 2.0, 108, dtype=torch.float64)[order].reshape(3, 9, 4).requires_grad_()
    assert torch.autograd.gradcheck(CausalActivation(mode, context), (x,))


@pytest.mark.parametrize("mode", ["min", "max"])
def test_gradcheck_continuation_reaches_the_previous_input(mode):
    order = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    x = torch.linspace(-1.0, 1.0, 24, dtype=torch.float64)[order].reshape(2, 4, 3).requires_grad_()
    last = torch.tensor([[0.03, -0.07, 0.11], [0.13, -0.17, 0.19]], dtype=torch.float64, requires_grad=True)
    total = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    act = CausalActivation(mode, context=True)
    assert torch.autograd.gradcheck(lambda a, b, c: act(a, Past(b, c, 5)), (x, last, total))


def test_gradient_of_first_position_is_not_halved():
    x = torch.tensor([[2.0], [5.0]], requires_grad=True)  # T = 2, D = 1: y = (min(2, 2), min(5, 2))
    CausalActivation("min")(x).sum().backward()
    assert x.grad.tolist() == [[2.0], [0.0]]  # position 1 pairs with itself and is the min of position 2


# ----------------------------------------------------------------------------- bad input


def test_bad_input():
    act = CausalActivation()
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got ndarray"):
        act(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"x: expected a tensor \(\.\.\., T, D\), got shape \(5,\)"):
        act(torch.zeros(5))
    with pytest.raises(TypeError, match=r"x: expected a floating-point tensor, got torch.int64"):
        act(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x: expected a non-empty dimension -2, got shape \(2, 0, 3\)"):
        act(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match=r"past.last: expected shape \(2, 3\) .* got \(2, 4\)"):
        act(torch.zeros(2, 5, 3), Past(torch.zeros(2, 4), torch.zeros(2, 3), 1))
    with pytest.raises(ValueError, match=r"past.count: expected an int ≥ 1 .* got 0"):
        act(torch.zeros(2, 5, 3), Past(torch.zeros(2, 3), torch.zeros(2, 3), 0))
    with pytest.raises(TypeError, match=r"past: expected a Past\(last, total, count\) or None, got tuple"):
        act(torch.zeros(2, 5, 3), (torch.zeros(2, 3), torch.zeros(2, 3), 1))
    with pytest.raises(ValueError, match=r"mode: expected one of max, mean, min, got 'median'"):
        CausalActivation("median")
    with pytest.raises(TypeError, match=r"context: expected a bool, got 'yes'"):
        CausalActivation("min", "yes")
    with pytest.raises(ValueError, match=r"x: expected a NumPy array \(\.\.\., T, D\) with T ≥ 1, got \(4,\)"):
        causal_pair_reduce_np(np.zeros(4))
    with pytest.raises(ValueError, match=r"mode: expected one of max, mean, min, got 'sum'"):
        causal_activation_np(np.zeros((3, 2)), "sum")


# ----------------------------------------------------------------------------- exercise 01.6a


def solution(x: np.ndarray) -> np.ndarray:
    """The master solution of 01.6a (the body of solutions/01_attention.py's causal_min_activation)."""
    previous = np.concatenate([x[:, :1], x[:, :-1]], axis=1)
    return np.minimum(x, previous)


def stub(x: np.ndarray) -> np.ndarray:
    raise NotImplementedError("write causal_min_activation")


MISTAKES = {  # a typical wrong answer → what the checker's message must say
    "np.roll wraps the last position into the first": (
        lambda x: np.minimum(x, np.roll(x, 1, axis=1)), r"case 1 of 6 — causality.*np.roll"),
    "pairs with the next position": (
        lambda x: np.minimum(x, np.concatenate([x[:, 1:], x[:, -1:]], axis=1)), r"changing only positions after t"),
    "first position paired with zero": (
        lambda x: np.minimum(x, np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)),
        r"case 2 of 6 .* disagrees at index \(\d+, 0, \d+\)"),
    "shift along the feature axis": (
        lambda x: np.minimum(x, np.concatenate([x[..., :1], x[..., :-1]], axis=-1)), r"case 2 of 6 .* disagrees"),
    "returns float32": (lambda x: solution(x).astype(np.float32), r"dtype float32, expected float64"),
    "drops the first position": (
        lambda x: np.minimum(x[:, 1:], x[:, :-1]), r"has shape \(2, 19, 6\), expected \(2, 20, 6\)"),
}


def test_checker_passes_the_solution(capsys):
    from lib.exercises import check

    check("01.6a", solution)
    assert "01.6a" in capsys.readouterr().out


def test_checker_lets_the_stub_error_propagate():
    from lib.exercises import check

    with pytest.raises(NotImplementedError, match="write causal_min_activation"):
        check("01.6a", stub)


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_checker_catches_typical_mistakes(mistake):
    from lib.exercises.registry import CheckFailed, get_exercise

    fn, message = MISTAKES[mistake]
    with pytest.raises(CheckFailed, match=message):
        get_exercise("01.6a").checker(fn)
