"""Checks for chapter 00 (the method): softmax, its backward pass, and the online-softmax state.

Every case is seeded, so a student sees the same inputs each time they run ``check``. All inputs
are float64 and the tolerances say why they are what they are: a correct float64 implementation
differs from the reference only by rounding, a few units in the last place.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from lib.exercises.cases import call_fresh, expect_array, expect_close, expect_pair, random_cuts
from lib.exercises.registry import register
from lib.online_softmax import reference_merge_states
from lib.softmax import reference_softmax, reference_softmax_backward

__all__ = ["check_softmax_rows", "check_softmax_backward", "check_online_update", "check_merge_states"]

_F64_ATOL, _F64_RTOL = 1e-12, 1e-10
_F64_REASON = "float64 throughout: an exact rewrite differs from the reference by a few ulps"
_MAX_REASON = "a maximum involves no rounding, so m must match exactly"
_SUM_REASON = "float64; each fold rescales l by one exp, adding a few ulps per block"


# ---------------------------------------------------------------- 00.1a softmax_rows
def _softmax_inputs() -> Iterator[tuple[str, np.ndarray]]:
    """(description, logits) pairs: normal, awkward shape, one row, ±1e4, masked rows, 3-D batch."""
    rng = np.random.default_rng(1)
    yield "standard normal logits, shape (4, 8)", rng.standard_normal((4, 8))
    yield "an awkward shape (113, 203)", 3.0 * rng.standard_normal((113, 203))
    yield "a single row, shape (1, 7)", rng.standard_normal((1, 7))
    offsets = np.array([1e4, -1e4, 1e4, -1e4, 1e4, -1e4])[:, None]
    yield "logits near ±1e4, where a plain exp overflows or underflows", offsets + rng.standard_normal((6, 10))
    masked = rng.standard_normal((5, 9))
    masked[1, :] = -np.inf
    masked[3, ::2] = -np.inf
    yield "row 1 fully masked, so all zeros; row 3 partly masked", masked
    yield "a batch of shape (2, 3, 5): softmax over the last axis only", rng.standard_normal((2, 3, 5))


@register(
    "00.1a",
    function="softmax_rows",
    points=2,
    summary="stable softmax over the last axis in NumPy (logits near ±1e4; all -inf rows give zeros)",
)
def check_softmax_rows(fn: Callable) -> int:
    """Compare ``fn(x)`` with :func:`lib.softmax.reference_softmax` on six seeded cases."""
    cases = list(_softmax_inputs())
    for i, (what, x) in enumerate(cases, 1):
        case = f"case {i} of {len(cases)} — {what}"
        y = expect_array(case, "softmax_rows(x)", call_fresh(fn, x), x.shape)
        expected = reference_softmax(x)
        expect_close(case, "softmax_rows(x)", y, expected, atol=_F64_ATOL, rtol=_F64_RTOL, reason=_F64_REASON)
    return len(cases)


# ---------------------------------------------------------------- 00.1b softmax_backward
def _backward_inputs() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(description, y = softmax(x), dy) triples."""
    rng = np.random.default_rng(2)
    shapes = {
        "shape (4, 8)": (4, 8),
        "an awkward shape (37, 59)": (37, 59),
        "a single row, shape (1, 6)": (1, 6),
        "a batch of shape (2, 3, 5)": (2, 3, 5),
    }
    for what, shape in shapes.items():
        yield what, reference_softmax(3.0 * rng.standard_normal(shape)), rng.standard_normal(shape)
    x = rng.standard_normal((4, 6))
    x[2, :] = -np.inf
    yield "row 2 fully masked: y is zero there, so dx must be too", reference_softmax(x), rng.standard_normal((4, 6))


def _finite_difference_vjp(x: np.ndarray, dy: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of L(x) = Σ softmax(x) · dy: dx_ij ≈ (L(x + h e_ij) − L(x − h e_ij)) / 2h."""
    dx = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = h
        up = np.sum(reference_softmax(x + step) * dy)
        down = np.sum(reference_softmax(x - step) * dy)
        dx[index] = (up - down) / (2 * h)
    return dx


@register(
    "00.1b",
    function="softmax_backward",
    points=2,
    summary="the softmax vector-Jacobian product dx = y * (dy - sum(y * dy)) over the last axis",
)
def check_softmax_backward(fn: Callable) -> int:
    """Compare ``fn(y, dy)`` with the reference VJP on five cases and with finite differences on one."""
    cases = list(_backward_inputs())
    total = len(cases) + 1
    for i, (what, y, dy) in enumerate(cases, 1):
        case = f"case {i} of {total} — {what}"
        dx = expect_array(case, "softmax_backward(y, dy)", call_fresh(fn, y, dy), y.shape)
        expected = reference_softmax_backward(y, dy)
        expect_close(case, "softmax_backward(y, dy)", dx, expected, atol=_F64_ATOL, rtol=_F64_RTOL, reason=_F64_REASON)
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    case = f"case {total} of {total} — finite differences of softmax, shape (3, 5)"
    dx = expect_array(case, "softmax_backward(y, dy)", call_fresh(fn, reference_softmax(x), dy), x.shape)
    expect_close(
        case, "softmax_backward(y, dy)", dx, _finite_difference_vjp(x, dy), atol=1e-7, rtol=0.0,
        reason="central differences, h = 1e-6: truncation ~h² and rounding ~eps/h, both below 1e-9",
    )
    return total


# ---------------------------------------------------------------- shared by 00.2a and 00.2b
def _one_shot_state(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, l) of each row of x (rows, n) in one pass: m = max x, l = Σ exp(x − m); (-inf, 0) if all -inf."""
    m = x.max(axis=-1)
    shift = np.where(np.isneginf(m), 0.0, m)
    return m, np.exp(x - shift[:, None]).sum(axis=-1)


def _expect_state(case: str, m: np.ndarray, l: np.ndarray, expected: tuple[np.ndarray, np.ndarray]) -> None:
    """m exactly equal, l within float64 rounding of the expected state."""
    expect_close(case, "m", m, expected[0], atol=0.0, rtol=0.0, reason=_MAX_REASON)
    expect_close(case, "l", l, expected[1], atol=0.0, rtol=1e-12, reason=_SUM_REASON)


# ---------------------------------------------------------------- 00.2a online_update
def _online_inputs() -> Iterator[tuple[str, np.ndarray, list[int]]]:
    """(description, logits (rows, n), column cuts) triples."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 37))
    yield "shape (4, 37) in random blocks of 1 to 8 columns", x, random_cuts(rng, 37, 8)
    offsets = np.array([1e4, -1e4, 1e4, -1e4, 1e4, -1e4])[:, None]
    x = offsets + 5.0 * rng.standard_normal((6, 64))
    yield "logits near ±1e4, shape (6, 64), random blocks", x, random_cuts(rng, 64, 12)
    x = rng.standard_normal((5, 30))
    x[0, :] = -np.inf
    x[1, :12] = -np.inf
    x[2, rng.integers(0, 30, size=10)] = -np.inf
    yield "row 0 all -inf, row 1 -inf for its first 12 columns", x, random_cuts(rng, 30, 6)
    yield "shape (3, 9), one column at a time", rng.standard_normal((3, 9)), list(range(10))
    yield "shape (2, 11), one block holding the whole row", rng.standard_normal((2, 11)), [0, 11]
    x = rng.standard_normal((4, 20))
    x[:, 8:12] = -np.inf
    yield "a middle block that is all -inf in every row", x, [0, 8, 12, 20]


@register(
    "00.2a",
    function="online_update",
    points=3,
    summary="fold one block into the running (max, sum of exp) state, safe for -inf",
)
def check_online_update(fn: Callable) -> int:
    """Fold each case's blocks through ``fn``; after every block compare with the one-shot state."""
    cases = list(_online_inputs())
    for i, (what, x, cuts) in enumerate(cases, 1):
        rows = x.shape[0]
        m, l = np.full(rows, -np.inf), np.zeros(rows)
        for k, (start, stop) in enumerate(zip(cuts[:-1], cuts[1:]), 1):
            case = f"case {i} of {len(cases)} — {what}, after block {k} (columns {start}:{stop})"
            m, l = expect_pair(case, "online_update", call_fresh(fn, m, l, x[:, start:stop]), rows)
            _expect_state(case, m, l, _one_shot_state(x[:, :stop]))
    return len(cases)


# ---------------------------------------------------------------- 00.2b merge_states
def _states_of(x: np.ndarray, cuts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The one-shot state of each part x[:, c_k:c_{k+1}]."""
    return [_one_shot_state(x[:, a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def _merge_left(fn: Callable, case: str, states: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """((s_1 ∘ s_2) ∘ s_3) ∘ ... with the student's merge."""
    m, l = states[0]
    for m_b, l_b in states[1:]:
        m, l = expect_pair(case, "merge_states", call_fresh(fn, m, l, m_b, l_b), m.shape[0])
    return m, l


def _merge_right(fn: Callable, case: str, states: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """s_1 ∘ (s_2 ∘ (... ∘ s_k)) with the student's merge."""
    m, l = states[-1]
    for m_a, l_a in reversed(states[:-1]):
        m, l = expect_pair(case, "merge_states", call_fresh(fn, m_a, l_a, m, l), m.shape[0])
    return m, l


def _check_associative(fn: Callable, case: str, x: np.ndarray, cuts: list[int]) -> None:
    """Left and right merge orders of the parts' states both give the one-shot state of x."""
    states, whole = _states_of(x, cuts), _one_shot_state(x)
    _expect_state(f"{case}, merged left to right", *_merge_left(fn, case, states), whole)
    _expect_state(f"{case}, merged right to left", *_merge_right(fn, case, states), whole)


def _empty_and_real_states(rng: np.random.Generator) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
    """States of 4 rows: a empty in row 0, b empty in row 1, both empty in row 2, both real in row 3."""
    (m_a, l_a), (m_b, l_b) = _states_of(rng.standard_normal((4, 10)), [0, 4, 10])
    m_a[[0, 2]], l_a[[0, 2]] = -np.inf, 0.0
    m_b[[1, 2]], l_b[[1, 2]] = -np.inf, 0.0
    return (m_a, l_a, m_b, l_b), reference_merge_states(m_a, l_a, m_b, l_b)


@register(
    "00.2b",
    function="merge_states",
    points=3,
    summary="merge two partial (max, sum of exp) states; associative, and empty (-inf) states are neutral",
)
def check_merge_states(fn: Callable) -> int:
    """Reference comparison, associativity over 3+ parts (normal and ±1e4 logits), empty states."""
    rng = np.random.default_rng(5)
    total = 4
    x = rng.standard_normal((5, 30))
    (m_a, l_a), (m_b, l_b) = _states_of(x, [0, int(rng.integers(1, 30)), 30])
    case = f"case 1 of {total} — two halves of a (5, 30) row block, against the reference"
    merged = expect_pair(case, "merge_states", call_fresh(fn, m_a, l_a, m_b, l_b), 5)
    _expect_state(case, *merged, reference_merge_states(m_a, l_a, m_b, l_b))

    inner_cuts = sorted(rng.choice(np.arange(1, 41), size=3, replace=False).tolist())
    case = f"case 2 of {total} — shape (6, 41) split into 4 random parts"
    _check_associative(fn, case, rng.standard_normal((6, 41)), [0, *inner_cuts, 41])

    offsets = np.array([1e4, -1e4, 1e4])[:, None]
    case = f"case 3 of {total} — logits near ±1e4 split into 3 parts"
    _check_associative(fn, case, offsets + 5.0 * rng.standard_normal((3, 24)), [0, 7, 15, 24])

    inputs, expected = _empty_and_real_states(rng)
    case = f"case 4 of {total} — an empty state m=-inf, l=0 in rows 0-2 is neutral"
    _expect_state(case, *expect_pair(case, "merge_states", call_fresh(fn, *inputs), 4), expected)
    return total
