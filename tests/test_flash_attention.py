"""Section 01.1 — FlashAttention-2: the tiled NumPy loops, the blocked PyTorch path and its hooks.

Every check compares against :func:`lib.attention.reference.attention_ref` (float64, computed here).
"""

import sys

import numpy as np
import pytest
import torch

import lib
from lib.attention import flash as flash_module
from lib.attention import (
    attention_ref,
    attention_ref_grad,
    flash_attention,
    flash_attention_with_lse,
    flash_bwd_np,
    flash_fwd_np,
    tiles_visited,
)
from lib.testing import numpy64

EXACT_FP32 = "exact rewrite, fp32 running statistics and accumulation over ≤ 203 keys"


def _qkv(shape_q, n_k, dv=None, dtype=torch.float32, seed=0):
    """Random q (…, Nq, d), k (…, Nk, d), v (…, Nk, dv)."""
    g = torch.Generator().manual_seed(seed)
    *lead, n_q, d = shape_q
    q = torch.randn(*lead, n_q, d, generator=g, dtype=torch.float64)
    k = torch.randn(*lead, n_k, d, generator=g, dtype=torch.float64)
    v = torch.randn(*lead, n_k, dv or d, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


# ----------------------------------------------------------------------------- NumPy tiles vs materialized


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("n_q, n_k", [(37, 37), (19, 50), (1, 23)])
def test_flash_np_matches_reference(causal, n_q, n_k):
    q, k, v = (numpy64(t) for t in _qkv((2, 3, n_q, 16), n_k, dv=12))
    do = np.random.default_rng(1).standard_normal((2, 3, n_q, 12))
    o_ref, lse_ref = attention_ref(q, k, v, causal)
    o, lse = flash_fwd_np(q, k, v, block_m=8, block_n=16, causal=causal)   # tail tiles on both axes
    reason = "float64, only summation order differs"
    lib.agree("flash_fwd_np o", o, o_ref, atol=1e-12, rtol=0, reason=reason, quiet=True)
    lib.agree("flash_fwd_np lse", lse, lse_ref, atol=1e-12, rtol=0, reason=reason, quiet=True)
    grads = flash_bwd_np(q, k, v, o, lse, do, block_m=8, block_n=16, causal=causal)
    for name, g, g_ref in zip("qkv", grads, attention_ref_grad(q, k, v, do, causal)):
        lib.agree(f"flash_bwd_np d{name}", g, g_ref, atol=1e-12, rtol=0, reason=reason, quiet=True)


# ----------------------------------------------------------------------------- torch path vs float64


SHAPES = {
    "pow2": ((2, 2, 64, 32), 64),
    "awkward-d40": ((1, 2, 113, 40), 113),
    "awkward-d59-nq-ne-nk": ((1, 1, 113, 59), 203),
    "decode": ((2, 2, 1, 32), 50),
    "shorter-than-a-block": ((2, 1, 5, 8), 5),
    "3d": ((3, 33, 16), 33),
}


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_torch_path_fp32_matches_float64(shape, causal):
    shape_q, n_k = shape
    q, k, v = (t.requires_grad_() for t in _qkv(shape_q, n_k))
    o, lse = flash_attention_with_lse(q, k, v, causal=causal, block_m=32, block_n=16)
    do = torch.randn_like(o)
    o.backward(do)
    args = [numpy64(t) for t in (q, k, v)]
    o_ref, lse_ref = attention_ref(*args, causal=causal)
    lib.agree("o fp32", o, o_ref, atol=1e-5, rtol=1e-4, reason=EXACT_FP32, quiet=True)
    lib.agree("lse fp32", lse, lse_ref, atol=1e-5, rtol=1e-4, reason=EXACT_FP32, quiet=True)
    for name, t, g_ref in zip("qkv", (q, k, v), attention_ref_grad(*args, numpy64(do), causal=causal)):
        lib.agree(f"d{name} fp32", t.grad, g_ref, atol=1e-5, rtol=1e-4, reason=EXACT_FP32, quiet=True)


def test_non_contiguous_views():
    qkv = torch.randn(2, 24, 3, 3, 16, requires_grad=True)     # (B, N, q/k/v, H, d), as a fused projection
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, N, d) strided views
    assert not q.is_contiguous()
    o = flash_attention(q, k, v, causal=True, block_m=16, block_n=16)
    do = torch.randn_like(o).transpose(-1, -2).contiguous().transpose(-1, -2)   # a strided upstream gradient too
    (dq,) = torch.autograd.grad(o, q, do)
    args = [numpy64(t) for t in (q, k, v)]
    o_ref, _ = attention_ref(*args, causal=True)
    dq_ref, _, _ = attention_ref_grad(*args, numpy64(do), causal=True)
    lib.agree("o of strided views", o, o_ref, atol=1e-5, rtol=1e-4, reason=EXACT_FP32, quiet=True)
    lib.agree("dq of strided views", dq, dq_ref, atol=1e-5, rtol=1e-4, reason=EXACT_FP32, quiet=True)


def test_lse_matches_logsumexp():
    q, k, v = _qkv((2, 2, 45, 24), 45)
    _, lse = flash_attention_with_lse(q, k, v, block_m=16, block_n=16)
    expected = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / 24**0.5, dim=-1)
    reason = "fp32 running statistics, |lse| < 10"
    lib.agree("lse vs logsumexp", lse, expected, atol=1e-6, rtol=0, reason=reason, quiet=True)


# ----------------------------------------------------------------------------- gradcheck (float64)


@pytest.mark.parametrize("n", [17, 33])
@pytest.mark.parametrize(
    "hooks",
    [dict(causal=False), dict(causal=True), dict(causal=False, bias=True), dict(causal=True, bias=True),
     dict(causal=True, window=5, n_sink=2)],
    ids=["full", "causal", "full-bias", "causal-bias", "window-sink"],
)
def test_gradcheck(n, hooks):
    hooks = dict(hooks)
    # Blocks of 8 and 16 leave a tail tile at both N; the bias (shared over batch and heads, so dBias is
    # summed over them) has N² entries, so its check uses gradcheck's fast mode (random projections).
    q, k, v = (t.double().requires_grad_() for t in _qkv((1, 2, n, 4), n))
    inputs = [q, k, v]
    with_bias = hooks.pop("bias", False)
    if with_bias:
        inputs.append(torch.randn(n, n, dtype=torch.float64, requires_grad=True))

    def fn(q, k, v, bias=None):
        return flash_attention(q, k, v, bias=bias, block_m=8, block_n=16, **hooks)

    assert torch.autograd.gradcheck(fn, inputs, fast_mode=with_bias)


def test_gradcheck_two_sided_window():
    # N = 17 with blocks of 8 and 16: a global-query tile, window tiles on both sides, a tail tile.
    q, k, v = (t.double().requires_grad_() for t in _qkv((1, 2, 17, 4), 17))
    fn = lambda q, k, v: flash_attention(q, k, v, window=5, n_sink=2, block_m=8, block_n=16)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


# ----------------------------------------------------------------------------- hooks


@pytest.mark.parametrize("causal", [True, False], ids=["causal-window", "two-sided-window"])
def test_bias_and_window_match_reference(causal):
    q, k, v = _qkv((2, 2, 40, 16), 40)
    bias = torch.randn(1, 2, 40, 40)
    o = flash_attention(q, k, v, causal=causal, bias=bias, window=7, n_sink=3, block_m=16, block_n=8)
    o_ref, _ = attention_ref(*(numpy64(t) for t in (q, k, v)), causal=causal, bias=numpy64(bias), window=7, n_sink=3)
    lib.agree("o with bias, window, sinks", o, o_ref, atol=1e-5, rtol=1e-4, reason=EXACT_FP32, quiet=True)


def test_visible_rule_of_the_two_window_kinds():
    """Causal window: i − w < j ≤ i; two-sided: |i − j| < w; sink positions are global tokens."""
    from lib.attention.reference import visible

    pos = np.arange(6)
    causal = visible(pos[:, None], pos[None, :], True, 2, 1).astype(int)
    two_sided = visible(pos[:, None], pos[None, :], False, 2, 1).astype(int)
    assert causal.tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                               [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0], [1, 0, 0, 0, 1, 1]]
    assert two_sided.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                                  [1, 0, 1, 1, 1, 0], [1, 0, 0, 1, 1, 1], [1, 0, 0, 0, 1, 1]]


def test_fully_masked_rows_give_zero_not_nan():
    # window 0 without sinks masks every key of every row; a −inf bias row masks one row of full attention.
    q, k, v = (t.requires_grad_() for t in _qkv((1, 2, 20, 8), 20))
    o, lse = flash_attention_with_lse(q, k, v, causal=True, window=0, block_m=8, block_n=8)
    o.sum().backward()
    assert torch.equal(o, torch.zeros_like(o)) and torch.isneginf(lse).all()
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in (q, k, v))

    bias = torch.zeros(20, 20)
    bias[3] = float("-inf")
    q.grad = None
    o, lse = flash_attention_with_lse(q, k, v, bias=bias, block_m=8, block_n=8)
    o.backward(torch.randn_like(o))
    assert torch.equal(o[..., 3, :], torch.zeros_like(o[..., 3, :])) and torch.isneginf(lse[..., 3]).all()
    assert torch.isfinite(q.grad).all() and torch.equal(q.grad[..., 3, :], torch.zeros_like(q.grad[..., 3, :]))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["positive-max", "negative-max"])
def test_stable_max_is_exact_with_tied_maxima(sign):
    # Repeated keys make every tile row's maximum tied; sign flips the tied maximum's sign.
    q, k, v = (t.double() for t in _qkv((1, 2, 30, 8), 32))
    k = k[..., :4, :].repeat(1, 1, 8, 1)
    q = sign * q.abs()
    k = k.abs()
    o_ref, lse_ref = attention_ref(numpy64(q), numpy64(k), numpy64(v), causal=True)
    for stable in (False, True):
        o, lse = flash_attention_with_lse(q, k, v, causal=True, stable_max=stable, block_m=8, block_n=8)
        reason = "float64; softmax is invariant to the shift"
        lib.agree(f"o stable_max={stable}", o, o_ref, atol=1e-12, rtol=0, reason=reason, quiet=True)
        lib.agree(f"lse stable_max={stable}", lse, lse_ref, atol=1e-12, rtol=0, reason=reason, quiet=True)


def test_stable_shift_cases():
    s = torch.tensor([[3.0, 3.0, 1.0], [-2.0, -2.0, -5.0], [4.0, 1.0, 0.0], [float("-inf")] * 3])
    shift = flash_module.stable_tile_shift(s)
    assert shift[:3].tolist() == [6.0, 0.0, 4.0] and torch.isneginf(shift[3])


# ----------------------------------------------------------------------------- reduced precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_flash_rule(dtype):
    q, k, v = (t.to(dtype).requires_grad_() for t in _qkv((2, 2, 48, 32), 48))
    do = torch.randn(2, 2, 48, 32).to(dtype)
    o = flash_attention(q, k, v, causal=True, block_m=16, block_n=16)
    grads = torch.autograd.grad(o, (q, k, v), do)
    mask = torch.ones(48, 48, dtype=torch.bool).tril()
    plain = torch.softmax((q @ k.transpose(-1, -2) / 32**0.5).masked_fill(~mask, float("-inf")), dim=-1) @ v
    plain_grads = torch.autograd.grad(plain, (q, k, v), do)
    args = [numpy64(t) for t in (q, k, v)]
    o_ref, _ = attention_ref(*args, causal=True)
    refs = attention_ref_grad(*args, numpy64(do), causal=True)
    lib.agree_flash_rule("o", o, plain, o_ref, quiet=True)
    for name, g, g_plain, g_ref in zip("qkv", grads, plain_grads, refs):
        lib.agree_flash_rule(f"d{name}", g, g_plain, g_ref, quiet=True)


# ----------------------------------------------------------------------------- tile skipping


def test_causal_visits_about_half_the_tiles():
    n_tiles = 512 // 64
    assert tiles_visited(512, 512, 64, 64) == n_tiles**2
    assert tiles_visited(512, 512, 64, 64, causal=True) == n_tiles * (n_tiles + 1) // 2


@pytest.mark.parametrize(
    "hooks", [dict(causal=True), dict(causal=True, window=20, n_sink=4), dict(window=20, n_sink=4), dict()],
    ids=["causal", "causal-window", "two-sided-window", "full"],
)
def test_forward_computes_exactly_the_counted_tiles(hooks, monkeypatch):
    calls = []
    original = flash_module._online_step
    monkeypatch.setattr(flash_module, "_online_step", lambda *a: calls.append(1) or original(*a))
    q, k, v = _qkv((1, 1, 100, 8), 100)
    flash_attention(q, k, v, block_m=16, block_n=16, **hooks)
    assert len(calls) == tiles_visited(100, 100, 16, 16, **hooks)
    causal_total = tiles_visited(100, 100, 16, 16, causal=True)
    assert hooks.get("window") is None or len(calls) < (causal_total if hooks.get("causal") else 7 * 7)


def test_two_sided_window_tile_count():
    """N = 256, tiles of 16, w = 32, one global token: query tile 0 (it holds the sink query) visits all
    16 key tiles; every other tile r visits key tiles r−2 … r+2 that exist, plus the sink tile 0."""
    band = [set(range(max(r - 2, 0), min(r + 3, 16))) for r in range(16)]
    assert tiles_visited(256, 256, 16, 16, window=32, n_sink=1) == 16 + sum(len({0} | b) for b in band[1:])
    assert tiles_visited(256, 256, 16, 16, window=32) == sum(len(b) for b in band)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_one_line_errors():
    q, k, v = _qkv((2, 2, 8, 16), 8)
    cases = [
        ((q, k[:1], v), {}, ValueError, "k: expected leading dims"),
        ((q, k[..., :8], v), {}, ValueError, "k: expected head dim 16"),
        ((q, k, v[..., :5, :]), {}, ValueError, "v: expected 8 positions"),
        ((q, k.double(), v), {}, TypeError, "k: expected dtype torch.float32"),
        ((q.int(), k, v), {}, TypeError, "q: expected one of"),
        ((q[0, 0], k, v), {}, ValueError, "q: expected a 3-d"),
        ((q, k, v), dict(bias=torch.zeros(3, 8, 8)), ValueError, "bias: expected a shape broadcastable"),
        ((q, k, v), dict(window=-1), ValueError, "window: expected None or a non-negative int"),
        ((q, k, v), dict(n_sink=-2), ValueError, "n_sink: expected a non-negative int"),
        ((q, k, v), dict(block_m=0), ValueError, "block_m: expected a positive int"),
        ((q, k[..., :4, :], v[..., :4, :]), dict(causal=True), ValueError, "q: expected at most as many queries"),
    ]
    for args, kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            flash_attention(*args, **kwargs)


# ----------------------------------------------------------------------------- dispatch glue


def test_cuda_dispatch_glue_with_a_stand_in_kernel(monkeypatch):
    """The launcher contract, checked on the CPU: 4-d inputs reach the kernels, 3-d ones come back 3-d,
    and a bias that needs a gradient keeps both passes on the PyTorch path."""
    calls = []

    def forward(q, k, v, *, causal, scale, bias=None, window=None, n_sink=0, stable_max=False):
        calls.append(("forward", q.ndim))
        spec = flash_module._Spec(causal, window, n_sink, stable_max, 16, 16, scale)
        return flash_module._forward_torch(q, k, v, bias, spec)

    def backward(q, k, v, o, lse, do, *, causal, scale, bias=None, window=None, n_sink=0):
        calls.append(("backward", q.ndim))
        spec = flash_module._Spec(causal, window, n_sink, False, 16, 16, scale)
        return flash_module._backward_torch(q, k, v, o, lse, do, bias, spec, want_dbias=False)[:3]

    stand_in = type(sys)("kernels.flash_attn")
    stand_in.flash_attn_forward, stand_in.flash_attn_backward = forward, backward
    monkeypatch.setitem(sys.modules, "kernels.flash_attn", stand_in)
    monkeypatch.setattr(flash_module, "use_kernel", lambda *tensors: True)

    q, k, v = (t.requires_grad_() for t in _qkv((2, 20, 8), 20))
    flash_attention(q, k, v, causal=True).sum().backward()
    assert calls == [("forward", 4), ("backward", 4)] and q.grad.shape == q.shape

    calls.clear()
    bias = torch.zeros(20, 20, requires_grad=True)
    flash_attention(q, k, v, bias=bias).sum().backward()
    assert calls == [] and bias.grad is not None
