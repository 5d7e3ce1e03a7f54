"""The FlashAttention-2 Triton kernels of section 01.1 against float64 attention.

On the CPU the kernels run under Triton's interpreter (≈2 ms per program instance), so the shapes
stay small: B·H ≤ 4, N ≤ 128, d ≤ 64. Sizes that are not multiples of the 16-wide interpreter tiles
(37, 45, 70) and a non-power-of-two head dimension (40) exercise every mask.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import kernels  # noqa: F401  (configures Triton before it is imported)
import kernels.flash_attn as fa
from kernels.flash_attn import flash_attn_backward, flash_attn_forward
from lib import agree, agree_flash_rule
from lib.device import interpreting, kernel_device
from lib.models.reference import reference_causal_attention
from lib.testing import nan_like, numpy64

pytestmark = pytest.mark.kernel

FP32 = "fp32 tiles, online softmax sums in another order than float64"
FP32_BWD = ("fp32 recomputation of P from the stored logsumexp; dS = P∘(dP - D) cancels, so errors "
            "are relative to the largest gradient entries")


def visible_mask(nq: int, nk: int, causal: bool, window: int | None, n_sink: int) -> torch.Tensor:
    """(Nq, Nk) bool: which keys each query sees (queries are the last Nq positions)."""
    pos = torch.arange(nk - nq, nk)[:, None]
    j = torch.arange(nk)[None, :]
    ok = torch.ones(nq, nk, dtype=torch.bool)
    if causal:
        ok &= j <= pos
    if window is not None:  # causal: one-sided; otherwise |i − j| < w. Sinks see and are seen by all.
        ok &= ((j > pos - window) & (j < pos + window)) | (j < n_sink) | (pos < n_sink)
    return ok


def naive_attention(q, k, v, *, causal, scale, bias=None, window=None, n_sink=0):
    """Materialised attention in q's dtype (float64 for references): (o, lse), o = 0 on rows that see nothing."""
    s = scale * q @ k.transpose(-1, -2)
    if bias is not None:
        s = s + bias
    ok = visible_mask(q.shape[2], k.shape[2], causal, window, n_sink).to(q.device)
    s = s.masked_fill(~ok, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    return p @ v, lse


def inputs(b, h, nq, nk, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for n in (nq, nk, nk))
    return tuple(t.to(dtype).to(kernel_device()) for t in (q, k, v))


def check_forward(q, k, v, *, causal, bias=None, window=None, n_sink=0, name="flash fwd"):
    scale = 1 / math.sqrt(q.shape[-1])
    o, lse = flash_attn_forward(q, k, v, causal=causal, scale=scale, bias=bias, window=window, n_sink=n_sink,
                                out=nan_like(q))
    ref = [torch.from_numpy(numpy64(t)) for t in (q, k, v)]
    b64 = None if bias is None else torch.from_numpy(numpy64(bias))
    o_ref, lse_ref = naive_attention(*ref, causal=causal, scale=scale, bias=b64, window=window, n_sink=n_sink)
    agree(f"{name} o", o, o_ref.numpy(), atol=1e-5, rtol=1e-4, reason=FP32)
    agree(f"{name} lse", lse, lse_ref.numpy(), atol=1e-5, rtol=1e-5, reason=FP32)
    return o, lse


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("n", [37, 70])
def test_forward_matches_float64(causal, n):
    check_forward(*inputs(1, 2, n, n, 64), causal=causal)


def test_forward_causal_matches_book_reference():
    q, k, v = inputs(2, 1, 37, 45, 40)   # Nq < Nk: queries are the last 37 positions, d = 40
    o, _ = check_forward(q, k, v, causal=True)
    agree("flash fwd vs reference_causal_attention", o, reference_causal_attention(*map(numpy64, (q, k, v))),
          atol=1e-5, rtol=1e-4, reason=FP32)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_forward_decode_one_query(causal):
    check_forward(*inputs(2, 2, 1, 45, 64), causal=causal, name="flash decode")


def test_forward_bias_full_and_broadcast():
    q, k, v = inputs(2, 2, 37, 37, 40)
    g = torch.Generator().manual_seed(1)
    full = torch.randn(2, 2, 37, 37, generator=g).to(kernel_device())
    check_forward(q, k, v, causal=True, bias=full, name="flash bias (B,H,Nq,Nk)")
    shared = torch.randn(1, 2, 37, 37, generator=g).to(kernel_device())
    check_forward(q, k, v, causal=False, bias=shared, name="flash bias (1,H,Nq,Nk)")


@pytest.mark.parametrize("causal", [False, True], ids=["two-sided", "causal"])
def test_forward_window_and_sinks(causal):
    check_forward(*inputs(1, 2, 70, 70, 32), causal=causal, window=20, n_sink=3, name="flash window+sinks")


def test_forward_fully_masked_row_is_zero():
    q, k, v = inputs(1, 1, 40, 40, 16)
    bias = torch.zeros(40, 40)
    bias[5] = float("-inf")                      # row 5 sees nothing
    o, lse = check_forward(q, k, v, causal=True, bias=bias.to(kernel_device()), name="flash masked row")
    assert torch.all(o[0, 0, 5] == 0) and lse[0, 0, 5] == float("-inf")


def reference_grads(q, k, v, do, *, causal, scale, bias=None, window=None, n_sink=0):
    leaves = [torch.from_numpy(numpy64(t)).requires_grad_() for t in (q, k, v)]
    b64 = None if bias is None else torch.from_numpy(numpy64(bias))
    o, _ = naive_attention(*leaves, causal=causal, scale=scale, bias=b64, window=window, n_sink=n_sink)
    o.backward(torch.from_numpy(numpy64(do)))
    return [t.grad.numpy() for t in leaves]


@pytest.mark.parametrize(
    "causal, nq, nk, d, window, n_sink, with_bias",
    [
        (False, 37, 37, 40, None, 0, False),
        (True, 70, 70, 64, None, 0, False),
        (True, 37, 45, 32, None, 0, True),
        (True, 70, 70, 32, 20, 3, False),
        (False, 70, 70, 32, 20, 3, False),
        (False, 37, 45, 40, 9, 10, True),
    ],
    ids=["full-d40", "causal-70", "causal-rect-bias", "window-sinks", "two-sided-window-sinks",
         "two-sided-rect-global-rows-bias"],
)
def test_backward_matches_autograd_float64(causal, nq, nk, d, window, n_sink, with_bias):
    q, k, v = inputs(1, 2, nq, nk, d)
    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(7)).to(kernel_device())
    bias = torch.randn(2, nq, nk, generator=torch.Generator().manual_seed(8)).to(kernel_device()) if with_bias else None
    scale = 1 / math.sqrt(d)
    kw = dict(causal=causal, scale=scale, bias=bias, window=window, n_sink=n_sink)
    o, lse = flash_attn_forward(q, k, v, **kw)
    grads = flash_attn_backward(q, k, v, o, lse, do, **kw)
    for name, ours, ref in zip(("dq", "dk", "dv"), grads, reference_grads(q, k, v, do, **kw)):
        agree(f"flash bwd {name}", ours, ref, atol=1e-4, rtol=1e-3, reason=FP32_BWD)


def test_backward_is_deterministic():
    q, k, v = inputs(1, 2, 37, 37, 32)
    do = torch.ones_like(q)
    o, lse = flash_attn_forward(q, k, v, causal=True, scale=0.2)
    first = flash_attn_backward(q, k, v, o, lse, do, causal=True, scale=0.2)
    second = flash_attn_backward(q, k, v, o, lse, do, causal=True, scale=0.2)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_half_precision_flash_rule(half_dtype, causal):
    q, k, v = inputs(1, 2, 70, 70, 64, dtype=half_dtype)
    scale = 1 / math.sqrt(64)
    o, lse = flash_attn_forward(q, k, v, causal=causal, scale=scale, out=nan_like(q))
    ref = [torch.from_numpy(numpy64(t)) for t in (q, k, v)]
    o_ref, lse_ref = naive_attention(*ref, causal=causal, scale=scale)
    # plain torch attention in the same dtype (float32 softmax on CPU is how torch does half softmax there)
    s = (scale * q @ k.transpose(-1, -2)).masked_fill(~visible_mask(70, 70, causal, None, 0).to(q.device), float("-inf"))
    baseline = torch.softmax(s.float(), dim=-1).to(half_dtype) @ v
    agree_flash_rule(f"flash fwd {half_dtype}", o, baseline, o_ref.numpy())
    agree(f"flash lse {half_dtype}", lse, lse_ref.numpy(), atol=2e-2, rtol=1e-2,
          reason="scores from rounded inputs in a half dtype, fp32 logsumexp")

    do = torch.randn(q.shape, generator=torch.Generator().manual_seed(3)).to(half_dtype).to(q.device)
    dq, dk, dv = flash_attn_backward(q, k, v, o, lse, do, causal=causal, scale=scale)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    s = (scale * leaves[0] @ leaves[1].transpose(-1, -2)).masked_fill(
        ~visible_mask(70, 70, causal, None, 0).to(q.device), float("-inf"))
    (torch.softmax(s.float(), dim=-1).to(half_dtype) @ leaves[2]).backward(do)
    refs = reference_grads(q, k, v, do, causal=causal, scale=scale)
    for name, ours, base, ref in zip(("dq", "dk", "dv"), (dq, dk, dv), (t.grad for t in leaves), refs):
        agree_flash_rule(f"flash bwd {name} {half_dtype}", ours, base, ref)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_stable_max_matches_float64_with_ties(causal):
    """01.2's shift: in head 0, keys 0..29 are one repeated vector (tied, mostly positive row maxima);
    in head 1 every key is, so each row's scores all tie, at a negative value in about half the rows.
    The output must still be exact attention (softmax is shift invariant)."""
    q, k, v = inputs(1, 2, 45, 45, 32)
    k = k.clone()
    k[:, 0, :30] = 2 * k[:, 0, :1]
    k[:, 1, :] = k[:, 1, :1]
    o, lse = check_forward(q, k, v, causal=causal, name="flash stable max")  # the standard shift, for comparison
    scale = 1 / math.sqrt(32)
    o_s, lse_s = flash_attn_forward(q, k, v, causal=causal, scale=scale, stable_max=True, out=nan_like(q))
    agree("flash stable max o", o_s, numpy64(o), atol=1e-5, rtol=1e-4, reason=FP32)
    agree("flash stable max lse", lse_s, numpy64(lse), atol=1e-5, rtol=1e-5, reason=FP32)
    row_max = (scale * q @ k.transpose(-1, -2)).amax(-1)
    assert (row_max > 0).any() and (row_max < 0).any()  # both tie cases occur


def test_bad_inputs_raise_one_line_errors():
    q, k, v = inputs(1, 1, 8, 8, 16)
    kw = dict(causal=False, scale=0.25)
    with pytest.raises(ValueError, match="q: expected a 4-d"):
        flash_attn_forward(q[0], k, v, **kw)
    with pytest.raises(TypeError, match="q: expected one of"):
        flash_attn_forward(q.long(), k, v, **kw)
    with pytest.raises(TypeError, match="k: expected the dtype of q"):
        flash_attn_forward(q, k.half(), v, **kw)
    with pytest.raises(ValueError, match="v: expected the shape of k"):
        flash_attn_forward(q, k, v[:, :, :4], **kw)
    with pytest.raises(ValueError, match="head dimension"):
        big = torch.zeros(1, 1, 8, 129, device=q.device)
        flash_attn_forward(big, big, big, **kw)
    with pytest.raises(ValueError, match="bias: expected a shape broadcastable"):
        flash_attn_forward(q, k, v, bias=torch.zeros(3, 8, 8, device=q.device), **kw)
    with pytest.raises(ValueError, match="window"):
        flash_attn_forward(q, k, v, window=0, **kw)
    with pytest.raises(ValueError, match="scale"):
        flash_attn_forward(q, k, v, causal=False, scale=-1.0)
    with pytest.raises(ValueError, match="out: expected"):
        flash_attn_forward(q, k, v, out=torch.empty(1, 1, 8, 8, device=q.device), **kw)
    o, lse = flash_attn_forward(q, k, v, **kw)
    with pytest.raises(ValueError, match="lse: expected"):
        flash_attn_backward(q, k, v, o, lse[0], o, **kw)


def test_numpy_sanity_of_visible_mask():
    ok = visible_mask(4, 6, True, 2, 1).numpy()
    expected = np.array([[1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0], [1, 0, 0, 0, 1, 1]], bool)
    assert (ok == expected).all()
    two_sided = visible_mask(4, 6, False, 2, 1).numpy()
    expected = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 0], [1, 0, 0, 1, 1, 1], [1, 0, 0, 0, 1, 1]], bool)
    assert (two_sided == expected).all()


@pytest.mark.skipif(not interpreting(), reason="relies on the interpreter's 16-wide tiles; GPU tiles are autotuned")
def test_forward_skips_tiles_outside_window():
    """Keys 16..31 (one 16-wide interpreter tile) lie before the window of queries 64..69 and after the
    sinks: NaN values there would poison those rows (0·NaN = NaN) if the kernel loaded the tile at all."""
    q, k, v = inputs(1, 1, 70, 70, 16)
    poisoned = v.clone()
    poisoned[:, :, 16:32] = float("nan")
    o, lse = flash_attn_forward(q, k, poisoned, causal=True, scale=0.25, window=20, n_sink=3, out=nan_like(q))
    ref = [torch.from_numpy(numpy64(t)) for t in (q, k, v)]
    o_ref, _ = naive_attention(*ref, causal=True, scale=0.25, window=20, n_sink=3)
    agree("flash window skips the tile", o[:, :, 64:], o_ref[:, :, 64:].numpy(), atol=1e-5, rtol=1e-4, reason=FP32)


@pytest.mark.skipif(not interpreting(), reason="relies on the interpreter's 16-wide tiles; GPU tiles are autotuned")
@pytest.mark.parametrize("keys, rows", [((64, 80), (16, 32)), ((16, 32), (64, 80))], ids=["after", "before"])
def test_forward_two_sided_window_skips_tiles(keys, rows):
    """Two-sided window 20 with 3 global tokens, N = 100: the key tile ``keys`` lies outside the window
    of the query tile ``rows`` (after it, or before it and after the sinks). NaN values there would
    poison those rows if the kernel loaded the tile."""
    q, k, v = inputs(1, 1, 100, 100, 16)
    poisoned = v.clone()
    poisoned[:, :, slice(*keys)] = float("nan")
    o, _ = flash_attn_forward(q, k, poisoned, causal=False, scale=0.25, window=20, n_sink=3, out=nan_like(q))
    ref = [torch.from_numpy(numpy64(t)) for t in (q, k, v)]
    o_ref, _ = naive_attention(*ref, causal=False, scale=0.25, window=20, n_sink=3)
    part = slice(*rows)
    agree("flash two-sided window skips the tile", o[:, :, part], o_ref[:, :, part].numpy(), atol=1e-5, rtol=1e-4,
          reason=FP32)


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 9), (False, 9)])
def test_lib_flash_attention_kernel_route_matches_its_torch_path(monkeypatch, causal, window):
    """lib.attention.flash_attention sends tensors to these launchers (forward and backward) and gets
    what its own PyTorch path computes; on the CPU the dispatch rule is patched to take that route."""
    import lib.attention.flash as flash

    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(1, 2, 37, 40, generator=g).to(kernel_device()) for _ in range(3))
    do = torch.randn(1, 2, 37, 40, generator=g).to(kernel_device())
    n_sink = 2 if window else 0
    results = {}
    for route in ("torch", "kernel"):
        if kernel_device().type == "cpu":
            monkeypatch.setattr(flash, "use_kernel", lambda *tensors, on=route == "kernel": on)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        o = flash.flash_attention(*leaves, causal=causal, window=window, n_sink=n_sink)
        o.backward(do)
        results[route] = [o.detach()] + [t.grad for t in leaves]
    for name, ours, theirs in zip(("o", "dq", "dk", "dv"), results["kernel"], results["torch"]):
        agree(f"kernel route {name} causal={causal} window={window}", ours, theirs.cpu(),
              atol=1e-4, rtol=1e-3, reason="two fp32 tilings of the same exact algorithm; dS cancels in backward")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_d", [32, 64, 128])
@pytest.mark.parametrize("hook", [None, "HAS_BIAS", "HAS_WINDOW", "STABLE_MAX"])
def test_autotune_tries_only_tiles_that_do_not_spill(dtype, block_d, hook):
    flags = {name: name == hook for name in ("HAS_BIAS", "HAS_WINDOW", "STABLE_MAX")}
    kept = fa._prune_fwd_configs(fa._FWD_CONFIGS, {"q_ptr": torch.empty(1, dtype=dtype)}, BLOCK_D=block_d, **flags)
    tiles = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) for c in kept}
    assert tiles and tiles == fa.fwd_tiles_without_spills(dtype == torch.float32, block_d, hook is not None)
