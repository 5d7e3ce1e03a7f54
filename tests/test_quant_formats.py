"""Tests for lib.quant.formats: NumPy and torch give the same codes (ties included), error bounds,
saturation, the FP grids, MXFP4/NVFP4 scales, nibble packing and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.quant import formats as F

DTYPES = [np.float32, np.float64]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- integer formats


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("shape, block, axis", [((7, 64), 32, -1), ((48, 13), 16, 0), ((3, 5, 96), 8, 2)])
def test_int_blocks_numpy_torch_codes_equal(dtype, bits, shape, block, axis):
    x = (_rng(bits).standard_normal(shape) * 3).astype(dtype)
    q_np, s_np = F.quantize_blocks_np(x, bits, block, axis)
    q_t, s_t = F.quantize_blocks(torch.from_numpy(x), bits, block, axis)
    assert q_np.dtype == np.int8 and q_t.dtype == torch.int8
    np.testing.assert_array_equal(q_t.numpy(), q_np)
    np.testing.assert_array_equal(s_t.numpy(), s_np)
    qmax = F.int_qmax(bits)
    assert np.abs(q_np).max() == qmax                       # the block absmax hits ±Q exactly
    assert np.abs(q_np).max() <= qmax


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_int_ties_round_half_even(dtype, bits):
    qmax = F.int_qmax(bits)
    halves = np.arange(-qmax, qmax) + 0.5                   # every tie inside the range
    x = np.concatenate([[float(qmax)], halves]).astype(dtype)   # absmax Q → s = 1 exactly
    x = np.pad(x, (0, (-len(x)) % 8))
    q_np, s_np = F.quantize_per_tensor_np(x, bits)
    assert s_np == 1
    q_t, _ = F.quantize_per_tensor(torch.from_numpy(x), bits)
    np.testing.assert_array_equal(q_t.numpy(), q_np)
    # half to even, written out: k + 0.5 goes to whichever of k, k + 1 is even
    lo = np.floor(x)
    expect = np.where(x == lo, x, np.where(lo % 2 == 0, lo, lo + 1)).astype(np.int8)
    np.testing.assert_array_equal(q_np, expect)
    assert q_np[list(x).index(0.5)] == 0 and q_np[list(x).index(-0.5)] == 0
    if qmax >= 2:
        assert q_np[list(x).index(1.5)] == 2 and q_np[list(x).index(-1.5)] == -2


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_int_error_at_most_half_step(bits):
    x = _rng(1).standard_normal((113, 203)).astype(np.float64)
    cases = [(*F.quantize_per_axis_np(x, bits, -1), 203), (*F.quantize_blocks_np(x[:, :192], bits, 32), 32)]
    for q, s, block in cases:
        xx = x[:, : q.shape[1]]
        err = np.abs(xx - F.dequantize_blocks_np(q, s, block))
        bound = np.repeat(s, block, axis=-1) / 2
        assert (err <= bound * (1 + 1e-12)).all()


def test_int_per_axis_and_per_tensor_are_special_blocks():
    x = _rng(2).standard_normal((12, 40)).astype(np.float32)
    q_a, s_a = F.quantize_per_axis_np(x, 4, axis=0)
    q_b, s_b = F.quantize_blocks_np(x, 4, 12, axis=0)
    np.testing.assert_array_equal(q_a, q_b)
    assert s_a.shape == (1, 40)
    q_t, s_t = F.quantize_per_tensor_np(x, 4)
    assert s_t.shape == () and s_t == np.abs(x).max() / np.float32(7)
    qa_t, sa_t = F.quantize_per_axis(torch.from_numpy(x), 4, axis=0)
    np.testing.assert_array_equal(qa_t.numpy(), q_a)
    qt_t, st_t = F.quantize_per_tensor(torch.from_numpy(x), 4)
    np.testing.assert_array_equal(qt_t.numpy(), q_t)
    assert st_t.shape == ()


def test_int_zero_block_and_noncontiguous_view():
    x = _rng(3).standard_normal((64, 10)).astype(np.float32)
    x[:32, 4] = 0.0                                        # one all-zero block along axis 0
    q_np, s_np = F.quantize_blocks_np(x, 4, 32, axis=0)
    assert s_np[0, 4] == 0 and (q_np[:32, 4] == 0).all()
    xhat = F.dequantize_blocks_np(q_np, s_np, 32, axis=0)
    assert np.isfinite(xhat).all() and (xhat[:32, 4] == 0).all()
    xt = torch.from_numpy(np.ascontiguousarray(x.T)).T        # a non-contiguous view
    assert not xt.is_contiguous()
    q_t, s_t = F.quantize_blocks(xt, 4, 32, axis=0)
    np.testing.assert_array_equal(q_t.numpy(), q_np)
    xhat_t = F.dequantize_blocks(q_t, s_t, 32, axis=0)
    assert torch.isfinite(xhat_t).all()
    np.testing.assert_array_equal(xhat_t.numpy(), xhat)


def test_block32_beats_per_tensor_with_outlier_channel():
    x = _rng(4).standard_normal((256, 512)).astype(np.float32)
    x[:, 99] *= 100.0                                      # one outlier channel
    q_t, s_t = F.quantize_per_tensor_np(x, 4)
    err_tensor = np.linalg.norm(x - s_t * q_t) / np.linalg.norm(x)
    q_b, s_b = F.quantize_blocks_np(x, 4, 32, axis=-1)
    err_block = np.linalg.norm(x - F.dequantize_blocks_np(q_b, s_b, 32)) / np.linalg.norm(x)
    # away from the outlier's blocks the gap is huge; on the whole tensor still clear
    assert err_block < 0.5 * err_tensor
    rest = np.ones(512, bool)
    rest[96:128] = False
    e_t = np.abs(x - s_t * q_t)[:, rest].mean()
    e_b = np.abs(x - F.dequantize_blocks_np(q_b, s_b, 32))[:, rest].mean()
    assert e_b < 0.2 * e_t


# ----------------------------------------------------------------------------- FP grids


def test_fp_grids():
    np.testing.assert_array_equal(F.fp_grid(2, 1), [0, 0.5, 1, 1.5, 2, 3, 4, 6])
    np.testing.assert_array_equal(F.fp_grid(2, 1, bias=1), F.E2M1_GRID)
    e1m2 = F.fp_grid(1, 2)
    assert np.all(np.diff(e1m2) == e1m2[1])                 # uniform: E1M2 is INT-like
    np.testing.assert_array_equal(F.fp_grid(3, 0), [0, 0.25, 0.5, 1, 2, 4, 8, 16])
    e4m3 = F.fp_grid(4, 3)
    assert e4m3[1] == 2.0**-9 and e4m3[-2] == 448 and len(e4m3) == 128
    assert np.all(np.diff(F.fp_grid(3, 2)) > 0)


FP_FORMATS = [(2, 1), (1, 2), (3, 0), (3, 2), (4, 3)]


@pytest.mark.parametrize("e, m", FP_FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_fp_numpy_torch_equal_random(e, m, dtype):
    x = (_rng(e * 10 + m).standard_normal(3000) * 2.5).astype(dtype)
    for maxval in [6.0, 2.7, 12.0]:
        a = F.quantize_fp_np(x, e, m, maxval)
        b = F.quantize_fp(torch.from_numpy(x), e, m, maxval).numpy()
        np.testing.assert_array_equal(a, b)
        grid = F.fp_grid(e, m) * (maxval / F.fp_grid(e, m)[-1])
        assert np.abs(a).max() <= grid[-1] * (1 + 1e-6)     # saturation at maxval
        # nearest: no grid point is closer (where |x| ≤ maxval), up to the rounding of x / α
        inside = np.abs(x) <= grid[-1]
        xa = np.abs(x).astype(np.float64)
        best = np.abs(xa[:, None] - grid[None, :]).min(axis=1)
        slack = 4 * np.finfo(dtype).eps * maxval
        assert (np.abs(xa - np.abs(a))[inside] <= best[inside] + slack).all()


@pytest.mark.parametrize("e, m", FP_FORMATS)
def test_quantize_fp_ties_go_to_even_code(e, m):
    grid = F.fp_grid(e, m)
    alpha = 2.0                                             # maxval = 2·max(grid): ties stay exact
    mids = (grid[1:] + grid[:-1]) / 2
    for dtype in DTYPES:
        x = np.concatenate([mids, -mids]).astype(dtype) * dtype(alpha)
        a = F.quantize_fp_np(x, e, m, alpha * grid[-1])
        b = F.quantize_fp(torch.from_numpy(x), e, m, alpha * grid[-1]).numpy()
        np.testing.assert_array_equal(a, b)
        idx = np.searchsorted(grid, np.abs(a) / alpha)
        assert np.all(grid[idx] == np.abs(a) / alpha) and np.all(idx % 2 == 0)


def test_quantize_fp_saturates():
    x = np.array([7.0, -100.0, 5.0, 5.5], np.float32)
    np.testing.assert_array_equal(F.quantize_fp_np(x, 2, 1, 6.0), [6, -6, 4, 6])
    np.testing.assert_array_equal(F.quantize_fp(torch.from_numpy(x), 2, 1, 6.0).numpy(), [6, -6, 4, 6])


def test_fp_codes_e2m1():
    mids = (F.E2M1_GRID[1:] + F.E2M1_GRID[:-1]) / 2
    x = np.concatenate([F.E2M1_GRID, -F.E2M1_GRID, mids, -mids, [9.0, -9.0, -0.1, -0.0]]).astype(np.float32)
    c_np = F.fp_codes_np(x)
    c_t = F.fp_codes(torch.from_numpy(x))
    np.testing.assert_array_equal(c_t.numpy(), c_np)
    np.testing.assert_array_equal(c_np[:8], np.arange(8))
    np.testing.assert_array_equal(c_np[9:16], np.arange(9, 16))
    assert c_np[8] == 0                                     # −0 → code 0
    np.testing.assert_array_equal(F.decode_e2m1_np(c_np), F.quantize_fp_np(x, 2, 1, 6.0))
    np.testing.assert_array_equal(F.decode_e2m1(c_t).numpy(), F.decode_e2m1_np(c_np))
    rand = _rng(5).standard_normal(4096).astype(np.float32) * 3
    np.testing.assert_array_equal(F.fp_codes(torch.from_numpy(rand)).numpy(), F.fp_codes_np(rand))


def test_e4m3_round_matches_torch_float8():
    g = F.fp_grid(4, 3)[:-1]
    mids = (g[1:] + g[:-1]) / 2
    rand = np.exp(_rng(6).uniform(np.log(1e-4), np.log(448), 5000))
    x = np.concatenate([g, mids, rand, [500.0, 1e4]]).astype(np.float32)
    ours_np = F.e4m3_round_np(x)
    ours_t = F.e4m3_round(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours_np, ours_t)
    assert ours_np[-1] == 448 and ours_np[-2] == 448       # saturating
    if hasattr(torch, "float8_e4m3fn"):
        inside = x <= 448
        ref = torch.from_numpy(x[inside]).to(torch.float8_e4m3fn).float().numpy()
        np.testing.assert_array_equal(ours_np[inside], ref)


# ----------------------------------------------------------------------------- MXFP4 and NVFP4


def _outlier_data(shape, seed):
    x = _rng(seed).standard_normal(shape).astype(np.float32)
    x[:, 5] *= 50.0
    x[2, :32] = 0.0                                         # an all-zero block
    x[3, 32:64] *= 1e-3
    return x


def test_mxfp4_scales_and_range():
    x = _outlier_data((8, 128), 7)
    codes, k = F.mx_quantize_np(x)
    codes_t, k_t = F.mx_quantize(torch.from_numpy(x))
    np.testing.assert_array_equal(codes_t.numpy(), codes)
    np.testing.assert_array_equal(k_t.numpy(), k)
    assert k.shape == (8, 4) and codes.dtype == np.uint8 and codes.max() <= 15
    scale = np.ldexp(1.0, k.astype(int))
    assert np.all(np.log2(scale) == np.round(np.log2(scale)))       # a power of two
    assert k[2, 0] == -127 and (codes[2, :32] == 0).all()
    amax = np.abs(x).reshape(8, 4, 32).max(-1)
    nz = amax > 0
    ratio = amax[nz] / scale[nz]
    assert np.all((ratio >= 4) & (ratio < 8))               # amax / X in [4, 8): floor(log2 amax) − 2
    vals = F.decode_e2m1_np(codes)
    assert np.abs(vals).max() <= 6                          # no element beyond 6 after scaling
    xhat = F.mx_dequantize_np(codes, k)
    np.testing.assert_array_equal(F.mx_dequantize(codes_t, k_t).numpy(), xhat)
    # elements below the saturation point are within half a grid gap (≤ 1 at the top) of x / X
    y = x / np.repeat(scale, 32, axis=-1)
    assert np.all(np.abs(y - vals)[np.abs(y) <= 6] <= 1.0 + 1e-6)


def test_mxfp4_exponent_clamped_to_e8m0():
    x = np.zeros((3, 32))
    x[0, 0], x[1, 0], x[1, 1] = 2.0**200, 2.0**-200, -(2.0**-201)
    x[2, :] = 1.0
    codes, k = F.mx_quantize_np(x)
    codes_t, k_t = F.mx_quantize(torch.from_numpy(x))
    np.testing.assert_array_equal(codes_t.numpy(), codes)
    np.testing.assert_array_equal(k_t.numpy(), k)
    np.testing.assert_array_equal(k[:, 0], [127, -127, -2])       # 1.0 = 4 · 2^-2
    assert codes[0, 0] == 7 and (codes[1] == 0).all()             # saturates at 6; underflows to 0
    assert (F.decode_e2m1_np(codes[2]) == 4).all()


def test_mxfp4_axis0_matches_transposed():
    x = _outlier_data((8, 64), 8).T.copy()                   # (64, 8): blocks along axis 0
    c0, k0 = F.mx_quantize_np(x, axis=0)
    c1, k1 = F.mx_quantize_np(x.T.copy(), axis=-1)
    np.testing.assert_array_equal(c0, c1.T)
    np.testing.assert_array_equal(k0, k1.T)
    c_t, k_t = F.mx_quantize(torch.from_numpy(x), axis=0)
    np.testing.assert_array_equal(c_t.numpy(), c0)


def test_nvfp4_scales_and_error():
    x = _outlier_data((8, 128), 9)
    codes, s_b, s_t = F.nv_quantize_np(x)
    codes_t, s_b_t, s_t_t = F.nv_quantize(torch.from_numpy(x))
    np.testing.assert_array_equal(codes_t.numpy(), codes)
    np.testing.assert_array_equal(s_b_t.numpy(), s_b)
    assert s_t_t.item() == s_t and s_t == np.abs(x).max() / np.float32(6 * 448)
    assert s_b.shape == (8, 8) and s_b.max() <= 448
    np.testing.assert_array_equal(F.e4m3_round_np(s_b), s_b)  # block scales are E4M3 values
    assert (s_b[2, :2] == 0).all() and (codes[2, :32] == 0).all()
    xhat = F.nv_dequantize_np(codes, s_b, s_t)
    np.testing.assert_array_equal(F.nv_dequantize(codes_t, s_b_t, s_t_t).numpy(), xhat)
    assert np.isfinite(xhat).all()
    # finer, non-power-of-two scales: NVFP4 beats MXFP4 on the same data (relative RMS)
    err_nv = np.linalg.norm(x - xhat) / np.linalg.norm(x)
    err_mx = np.linalg.norm(x - F.mx_dequantize_np(*F.mx_quantize_np(x))) / np.linalg.norm(x)
    assert err_nv < err_mx < 0.2


# ----------------------------------------------------------------------------- nibble packing


@pytest.mark.parametrize("n", [1, 2, 7, 32, 33])
def test_pack_unpack_identity(n):
    codes = _rng(n).integers(0, 16, size=(3, n)).astype(np.uint8)
    packed = F.pack_nibbles_np(codes)
    assert packed.shape == (3, (n + 1) // 2) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packed[:, 0] & 0x0F, codes[:, 0])        # low nibble first
    np.testing.assert_array_equal(F.unpack_nibbles_np(packed, n), codes)
    packed_t = F.pack_nibbles(torch.from_numpy(codes))
    np.testing.assert_array_equal(packed_t.numpy(), packed)
    np.testing.assert_array_equal(F.unpack_nibbles(packed_t, n).numpy(), codes)
    if n % 2:
        assert (packed[:, -1] >> 4 == 0).all()                              # the zero pad code


# ----------------------------------------------------------------------------- argument errors


def test_errors_name_the_argument():
    x = np.ones((4, 64), np.float32)
    xt = torch.ones(4, 64)
    for fn, arg in [(F.quantize_blocks_np, x), (F.quantize_blocks, xt)]:
        for bits in (1, 9, 4.0, True):
            with pytest.raises(ValueError, match="^bits"):
                fn(arg, bits, 32)
        with pytest.raises(ValueError, match=r"^block.*64"):
            fn(arg, 4, 24)
        with pytest.raises(ValueError, match="^block"):
            fn(arg, 4, 0)
        with pytest.raises(ValueError, match="^axis"):
            fn(arg, 4, 32, axis=2)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 3] = bad
        for fn, arg in [(F.quantize_blocks_np, y), (F.quantize_blocks, torch.from_numpy(y))]:
            with pytest.raises(ValueError, match="^x: expected finite"):
                fn(arg, 4, 32)
        with pytest.raises(ValueError, match="^x"):
            F.quantize_fp_np(y, 2, 1, 6.0)
        with pytest.raises(ValueError, match="^x"):
            F.mx_quantize(torch.from_numpy(y))
        with pytest.raises(ValueError, match="^x"):
            F.nv_quantize_np(y)
    with pytest.raises(TypeError, match="^x"):
        F.quantize_blocks_np(np.ones((4, 64), np.int32), 4, 32)
    with pytest.raises(ValueError, match=r"^block.*48"):
        F.mx_quantize_np(np.ones((2, 48), np.float32))
    with pytest.raises(ValueError, match="^maxval"):
        F.quantize_fp_np(x, 2, 1, 0.0)
    with pytest.raises(ValueError, match="^exp_bits"):
        F.fp_grid(0, 1)
    with pytest.raises(ValueError, match="^codes"):
        F.pack_nibbles_np(np.array([3, 16]))
    with pytest.raises(ValueError, match="^codes"):
        F.pack_nibbles(torch.tensor([3, -1]))
    packed = F.pack_nibbles_np(np.array([1, 2, 3], np.uint8))
    for n in (1, 5, -1):
        with pytest.raises(ValueError, match="^n"):
            F.unpack_nibbles_np(packed, n)
        with pytest.raises(ValueError, match="^n"):
            F.unpack_nibbles(torch.from_numpy(packed), n)
