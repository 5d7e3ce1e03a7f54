"""Section 01.3 — Delta Attention: NumPy references, the torch composition, its invariants, bad input,
and the 01.3a exercise checker (passes on the solution, fails on the stub and on typical mistakes)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import lib
from lib.attention.delta import (
    delta_attention,
    delta_attention_np,
    delta_correct,
    delta_correct_np,
    delta_tiles,
    dense_rows_np,
    representative_rows,
    sparse_window_attention_np,
)
from lib.attention.reference import attention_ref
from lib.exercises import CheckFailed, get_exercise
from lib.testing import numpy64

FP64 = "float64 vs float64: the same sums in another order"
FP32 = "exact rewrite in fp32 (online softmax over ≤ 75 keys) against float64"


def _qkv(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))


# ----------------------------------------------------------------------------- NumPy references


@pytest.mark.parametrize("causal", [False, True], ids=["two-sided", "causal"])
def test_numpy_references_match_masked_attention(causal):
    q, k, v = (numpy64(t) for t in _qkv((2, 3, 37, 8)))
    lib.agree("sparse window", sparse_window_attention_np(q, k, v, 5, 2, causal),
              attention_ref(q, k, v, causal=causal, window=5, n_sink=2)[0], atol=1e-12, rtol=1e-12, reason=FP64,
              quiet=True)
    rows = representative_rows(37, 8)
    dense, _ = attention_ref(q, k, v, causal=causal)
    lib.agree("dense rows", dense_rows_np(q, k, v, rows, causal), dense[..., rows, :], atol=1e-12, rtol=1e-12,
              reason=FP64, quiet=True)


def test_correction_is_exact_at_representative_rows_and_constant_in_blocks():
    rng = np.random.default_rng(0)
    o_sp, o_rows = rng.standard_normal((2, 19, 4)), rng.standard_normal((2, 3, 4))   # N = 19, γ = 8: blocks 8, 8, 3
    o = delta_correct_np(o_sp, o_rows, 8)
    lib.agree("representative rows", o[:, ::8], o_rows, atol=1e-12, rtol=0, reason=FP64, quiet=True)
    shift = o - o_sp
    for start in (0, 8, 16):
        block = shift[:, start:start + 8]
        lib.agree(f"block at {start}", block, np.broadcast_to(block[:, :1], block.shape), atol=1e-12, rtol=0,
                  reason=FP64, quiet=True)


# ----------------------------------------------------------------------------- torch vs NumPy


@pytest.mark.parametrize("causal", [False, True], ids=["two-sided", "causal"])
@pytest.mark.parametrize("n, gamma", [(64, 16), (75, 16), (20, 32)], ids=["N64", "N75-tail-block", "one-block"])
def test_torch_matches_numpy(causal, n, gamma):
    q, k, v = _qkv((2, 3, n, 24))
    o = delta_attention(q, k, v, window=9, n_sink=1, gamma=gamma, causal=causal, block_m=16, block_n=16)
    expected = delta_attention_np(*(numpy64(t) for t in (q, k, v)), 9, 1, gamma, causal)
    lib.agree("delta attention fp32", o, expected, atol=1e-5, rtol=1e-4, reason=FP32, quiet=True)
    dense, _ = attention_ref(*(numpy64(t) for t in (q, k, v)), causal=causal)
    lib.agree("corrected = dense at representative rows", o[..., ::gamma, :], dense[..., ::gamma, :],
              atol=1e-5, rtol=1e-4, reason=FP32, quiet=True)


def test_torch_correction_on_a_3d_noncontiguous_input():
    q, k, v = (t.transpose(0, 1) for t in _qkv((40, 2, 16)))          # (B, N, d) views, not contiguous
    o = delta_correct(q, k[:, ::8], 8)
    lib.agree("delta_correct torch vs NumPy", o, delta_correct_np(numpy64(q), numpy64(k[:, ::8]), 8),
              atol=1e-6, rtol=1e-6, reason="one fp32 subtraction and one addition", quiet=True)


@pytest.mark.parametrize("causal", [False, True], ids=["two-sided", "causal"])
def test_window_covering_everything_gives_dense_and_zero_delta(causal):
    q, k, v = _qkv((1, 2, 50, 8))
    o = delta_attention(q, k, v, window=50, gamma=7, causal=causal, block_m=16, block_n=16)
    dense, _ = attention_ref(*(numpy64(t) for t in (q, k, v)), causal=causal)
    lib.agree("window ≥ N: dense", o, dense, atol=1e-5, rtol=1e-4, reason=FP32, quiet=True)
    o_sp = sparse_window_attention_np(*(numpy64(t) for t in (q, k, v)), 50, 0, causal)
    delta = dense_rows_np(*(numpy64(t) for t in (q, k, v)), representative_rows(50, 7), causal) - o_sp[..., ::7, :]
    assert np.abs(delta).max() < 1e-12


def test_causal_outputs_ignore_future_tokens():
    q, k, v = _qkv((1, 2, 60, 8))
    o = delta_attention(q, k, v, window=6, n_sink=2, gamma=8, causal=True, block_m=16, block_n=16)
    k2, v2 = k.clone(), v.clone()
    k2[..., 30:, :] += 5.0
    v2[..., 30:, :] -= 3.0
    o2 = delta_attention(q, k2, v2, window=6, n_sink=2, gamma=8, causal=True, block_m=16, block_n=16)
    assert torch.equal(o[..., :30, :], o2[..., :30, :])        # masked keys add exp(−inf) = 0 exactly
    assert not torch.equal(o[..., 30:, :], o2[..., 30:, :])


def test_gradients_flow_float64():
    q, k, v = (t.requires_grad_() for t in _qkv((1, 1, 13, 4), dtype=torch.float64))
    fn = lambda q, k, v: delta_attention(q, k, v, window=3, n_sink=1, gamma=4, block_m=8, block_n=8)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_tile_counts():
    tiles = delta_tiles(256, window=32, n_sink=1, gamma=16, causal=False, block_m=16, block_n=16)
    # query tile 0 holds the global token (16 tiles); tiles 1, 2, 3 … 13, 14, 15 see 4, 5, 6 … 6, 5, 4
    assert tiles == {"dense": 256, "sparse": 16 + 4 + 5 + 6 * 11 + 5 + 4, "rows": 16}
    causal = delta_tiles(256, window=32, n_sink=1, gamma=16, causal=True, block_m=16, block_n=16)
    assert causal["dense"] == 16 * 17 // 2 and causal["sparse"] < causal["dense"]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(window=0, gamma=4), ValueError, "window: expected a positive int"),
        (dict(window=None, gamma=4), ValueError, "window: expected a positive int"),
        (dict(window=4, gamma=0), ValueError, "gamma: expected a positive int"),
        (dict(window=4, gamma=4, n_sink=-1), ValueError, "n_sink: expected a non-negative int"),
        (dict(window=4, gamma=4, causal=1), TypeError, "causal: expected a bool"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    q, k, v = _qkv((1, 1, 10, 4))
    with pytest.raises(error, match=re.escape(message)):
        delta_attention(q, k, v, **kwargs)


def test_bad_tensors():
    q, k, v = _qkv((1, 1, 10, 4))
    with pytest.raises(ValueError, match="q: expected as many queries as keys"):
        delta_attention(q[..., :5, :], k, v, window=3, gamma=2)
    with pytest.raises(TypeError, match="k: expected a torch.Tensor"):
        delta_attention(q, numpy64(k), v, window=3, gamma=2)
    with pytest.raises(TypeError, match="k: expected dtype"):
        delta_attention(q, k.double(), v, window=3, gamma=2)
    with pytest.raises(ValueError, match="q: expected a 3-d"):
        delta_attention(q[0, 0], k[0, 0], v[0, 0], window=3, gamma=2)


# ----------------------------------------------------------------------------- exercise 01.3a


def _solution(o_sparse, o_dense_rows, gamma):
    """The body of the 01.3a solution (solutions/01_attention.py), restated here."""
    delta = o_dense_rows - o_sparse[..., ::gamma, :]
    return o_sparse + np.repeat(delta, gamma, axis=-2)[..., : o_sparse.shape[-2], :]


def _last_row_representative(o_sparse, o_dense_rows, gamma):
    o = o_sparse.copy()
    for t in range(o_dense_rows.shape[-2]):
        r = min(t * gamma + gamma - 1, o.shape[-2] - 1)
        o[..., t * gamma:(t + 1) * gamma, :] += (o_dense_rows[..., t, :] - o_sparse[..., r, :])[..., None, :]
    return o


def _tiled_not_repeated(o_sparse, o_dense_rows, gamma):
    delta = o_dense_rows - o_sparse[..., ::gamma, :]
    reps = -(-o_sparse.shape[-2] // delta.shape[-2])
    return o_sparse + np.tile(delta, (1,) * (delta.ndim - 2) + (reps, 1))[..., : o_sparse.shape[-2], :]


def _recompute_only(o_sparse, o_dense_rows, gamma):
    """The paper's "recompute" ablation: replace the representative rows, correct nothing else."""
    o = o_sparse.copy()
    o[..., ::gamma, :] = o_dense_rows
    return o


def _sign_flipped(o_sparse, o_dense_rows, gamma):
    delta = o_sparse[..., ::gamma, :] - o_dense_rows
    return o_sparse + np.repeat(delta, gamma, axis=-2)[..., : o_sparse.shape[-2], :]


def _assumes_full_blocks(o_sparse, o_dense_rows, gamma):
    blocks = o_sparse.reshape(o_sparse.shape[:-2] + (-1, gamma, o_sparse.shape[-1]))
    return (blocks + (o_dense_rows - o_sparse[..., ::gamma, :])[..., None, :]).reshape(o_sparse.shape)


def test_exercise_passes_on_solution():
    assert get_exercise("01.3a").checker(_solution) == 6


def test_exercise_stub_error_propagates():
    def stub(o_sparse, o_dense_rows, gamma):
        raise NotImplementedError("Exercise 01.3a: write the body of delta_correct")

    with pytest.raises(NotImplementedError):
        get_exercise("01.3a").checker(stub)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (_last_row_representative, "representative row"),
        (_tiled_not_repeated, "representative row"),
        (_recompute_only, "same shift"),
        (_sign_flipped, "representative row"),
    ],
    ids=["last-row", "tile-not-repeat", "recompute-only", "sign"],
)
def test_exercise_catches_typical_mistakes(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        get_exercise("01.3a").checker(wrong)


def test_exercise_full_blocks_only_fails_on_the_tail_case():
    with pytest.raises(ValueError):                          # reshape of N = 75 into blocks of 16
        get_exercise("01.3a").checker(_assumes_full_blocks)
