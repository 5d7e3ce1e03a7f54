"""Section 01.2: bf16 rounding emulated where a kernel rounds, and the stable-max shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lib
from lib.attention import attention_ref, flash_attention
from lib.attention.flash import STABLE_BETA, STABLE_TAU
from lib.attention.lowprec import (
    bf16_round,
    flash_attention_bf16,
    flash_fwd_lowprec_np,
    reference_stable_shift,
    sample_tied_inputs,
    signed_error,
    stable_shift,
)


def test_paper_constants():
    assert (STABLE_BETA, STABLE_TAU) == (2.0, 1e-3)  # the authors' attention.py


def test_bf16_round_is_torchs_cast_bit_for_bit():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-38, 38, 200_000)).astype(np.float32)
    halfway = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-126 * 1.5, 0.0, -0.0, np.inf, -np.inf, 3.4e38],
                       dtype=np.float32)
    x = np.concatenate([x, halfway])
    expected = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    assert np.array_equal(bf16_round(x).view(np.uint32), expected.view(np.uint32))
    assert np.isnan(bf16_round(np.array([np.nan], dtype=np.float32))).all()


def test_bf16_round_ties_go_to_even():
    one_and_half_ulp = np.float32(1 + 2**-8)        # halfway between 1 and 1 + 2^-7: the even one is 1
    three_halves = np.float32(1 + 3 * 2**-8)        # halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6
    assert bf16_round(one_and_half_ulp) == 1.0 and bf16_round(three_halves) == np.float32(1 + 2**-6)


@pytest.mark.parametrize(
    ("scores", "previous", "expected"),
    [
        ([[3.0, 3.0, 1.0]], [-np.inf], [6.0]),              # tied positive max → β·m
        ([[-1.0, -1.0, -4.0]], [-np.inf], [0.0]),           # tied negative max → 0
        ([[3.0, 2.0, 1.0]], [-np.inf], [3.0]),              # unique max → m
        ([[3.0, 3.0 - 5e-4, 1.0]], [-np.inf], [6.0]),       # a near-tie within τ counts
        ([[3.0, 3.0 - 5e-3, 1.0]], [-np.inf], [3.0]),       # outside τ it does not
        ([[3.0, 3.0, 1.0]], [7.0], [7.0]),                  # never below the previous shift
        ([[-np.inf, -np.inf]], [-np.inf], [-np.inf]),       # a fully masked tile row
    ],
)
def test_stable_shift_cases(scores, previous, expected):
    s, prev = np.array(scores), np.array(previous)
    np.testing.assert_array_equal(reference_stable_shift(s, prev), expected)
    np.testing.assert_array_equal(stable_shift(torch.from_numpy(s), torch.from_numpy(prev)).numpy(), expected)


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("acc", ["fp32", "bf16"])
def test_numpy_and_torch_emulations_agree(stable, acc):
    q, k, v = sample_tied_inputs(4, 70, 24, ties=3, seed=5)
    o_t, lse_t = flash_attention_bf16(q, k, v, stable=stable, acc=acc, block_n=32)
    for b in range(4):
        o_n, lse_n = flash_fwd_lowprec_np(*(x[b].float().numpy() for x in (q, k, v)), block_n=32, acc=acc,
                                          stable=stable)
        lib.agree("emulated o", o_t[b], o_n, atol=2**-7, rtol=2**-7, quiet=True,
                  reason="same rounding points; a different sum order can flip one bf16 rounding")
        lib.agree("emulated lse", lse_t[b], lse_n, atol=1e-4, rtol=1e-5, quiet=True, reason="fp32 logsumexp")


def test_emulation_is_within_bf16_precision_of_float64():
    q, k, v = sample_tied_inputs(8, 64, 32, ties=2, seed=3)
    exact, lse = attention_ref(*(x.double().numpy() for x in (q, k, v)))
    o, lse_bf16 = flash_attention_bf16(q, k, v, stable=True)
    assert lib.agreement.rel_rms_error(o.double().numpy(), exact) < 2**-7
    lib.agree("lse", lse_bf16, lse, atol=1e-2, rtol=1e-3, quiet=True, reason="P̃ rounded to bf16 inside ℓ")


def test_stable_shift_removes_the_bias_at_ties():
    q, k, v = sample_tied_inputs(500, 64, 32, ties=2, seed=7)
    exact = attention_ref(*(x.double().numpy() for x in (q, k, v)))[0]
    biased = signed_error(flash_attention_bf16(q, k, v)[0], exact).mean()
    fixed = signed_error(flash_attention_bf16(q, k, v, stable=True)[0], exact).mean()
    assert abs(biased) > 10 * abs(fixed)


def test_stable_max_is_exact_in_float64_on_the_blocked_path():
    q, k, v = (x.double() for x in sample_tied_inputs(2, 40, 16, ties=5, seed=1))
    expected = attention_ref(q.numpy(), k.numpy(), v.numpy())[0]
    lib.agree("stable max float64", flash_attention(q, k, v, stable_max=True, block_m=16, block_n=16), expected,
              atol=1e-12, rtol=1e-10, quiet=True, reason="shift invariance: only rounding differs")


def test_sample_tied_inputs_has_the_promised_ties():
    q, k, v = sample_tied_inputs(3, 20, 8, ties=4, seed=0)
    s = q.double() @ k.double().transpose(-1, -2)
    assert ((s == s.amax(-1, keepdim=True)).sum(-1) >= 4).all()
    assert q.dtype == k.dtype == v.dtype == torch.bfloat16 and float(v.float().mean()) < -0.9


def test_bad_input_names_the_argument():
    q, k, v = sample_tied_inputs(1, 8, 4, ties=2)
    with pytest.raises(TypeError, match="^q: expected a bfloat16 tensor"):
        flash_attention_bf16(q.float(), k, v)
    with pytest.raises(ValueError, match="^acc: "):
        flash_attention_bf16(q, k, v, acc="fp16")
    with pytest.raises(ValueError, match="q, k, v: expected"):
        flash_attention_bf16(q, k[..., :3], v)
    with pytest.raises(ValueError, match="^ties: "):
        sample_tied_inputs(1, 8, 4, ties=9)
    with pytest.raises(ValueError, match="^acc: "):
        flash_fwd_lowprec_np(q[0].float().numpy(), k[0].float().numpy(), v[0].float().numpy(), acc="int8")
