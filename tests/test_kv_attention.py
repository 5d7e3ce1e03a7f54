"""Section 01.4 — key-value attention: symmetry, NumPy ↔ lib agreement, parameters, equivariance, gradients."""

from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch

import lib
from lib.attention.kv import POS_CHANNELS, KVSelfAttention, kv_attention_np, kv_logits_np, pos_encoding_2d
from lib.exercises import check
from lib.models.tiny_encoder import SelfAttention, TinyEncoder, TinyEncoderConfig

FP32 = dict(atol=1e-5, rtol=1e-4, reason="fp32 layer vs float64 reference: an exact rewrite, rounding only")
F64 = dict(atol=1e-12, rtol=1e-10, reason="float64 on both sides: only the summation order differs")


def _affine_as_linear(linear: torch.nn.Linear) -> np.ndarray:
    """(d_in + 1, d_out) float64: x W + b written as [x, 1] @ [[W], [b]] for the bias-free reference."""
    return np.concatenate([linear.weight.detach().double().numpy().T, linear.bias.detach().double().numpy()[None]])


def _reference_layer(layer: KVSelfAttention, x: torch.Tensor) -> np.ndarray:
    """The whole layer from :func:`kv_attention_np`: (B, N, d) float64, one sequence at a time."""
    d = layer.d_model
    w_kv = _affine_as_linear(layer.kv)
    w_out = _affine_as_linear(layer.out)
    positional = {}
    if layer.pos_map is not None:
        positional = dict(
            pos=pos_encoding_2d(x.shape[1], layer.pos_map.in_features),
            w=layer.pos_map.weight.detach().double().numpy()[0],
            b=float(layer.pos_map.bias.detach()),
        )
    outs = []
    for seq in x.detach().double().numpy():
        seq1 = np.concatenate([seq, np.ones((len(seq), 1))], axis=1)           # [x, 1]
        heads = kv_attention_np(seq1, w_kv[:, :d], w_kv[:, d:], layer.n_heads, **positional)
        outs.append(np.concatenate([heads, np.ones((len(seq), 1))], axis=1) @ w_out)
    return np.stack(outs)


def _randomize_pos_map(layer: KVSelfAttention) -> None:
    """Non-trivial w and b, so the test does not ride on the initialization (w = 1/C, b = 0)."""
    with torch.no_grad():
        layer.pos_map.weight.copy_(torch.randn_like(layer.pos_map.weight))
        layer.pos_map.bias.fill_(0.3)


@pytest.mark.parametrize("positional", [False, True])
@pytest.mark.parametrize("batch, n, d, heads", [(2, 16, 64, 4), (3, 37, 48, 3), (1, 1, 8, 2)])
def test_layer_matches_the_numpy_reference_in_fp32(positional, batch, n, d, heads) -> None:
    lib.seed_everything(0)
    layer = KVSelfAttention(d, heads, positional=positional)
    if positional:
        _randomize_pos_map(layer)
    x = torch.randn(batch, n, d)
    lib.agree(f"KV layer{'+Pos' if positional else ''} N={n} d={d}", layer(x), _reference_layer(layer, x),
              **FP32, quiet=True)


def test_non_contiguous_input() -> None:
    lib.seed_everything(1)
    layer = KVSelfAttention(32, 4, positional=True)
    x = torch.randn(2, 32, 20).transpose(1, 2)                                 # (2, 20, 32), a strided view
    assert not x.is_contiguous()
    lib.agree("KV+Pos layer, strided input", layer(x), _reference_layer(layer, x), **FP32, quiet=True)


def test_kv_logits_are_symmetric_and_obey_the_gram_bound() -> None:
    rng = np.random.default_rng(0)
    x, wk = rng.standard_normal((23, 16)), rng.standard_normal((16, 16))
    s = kv_logits_np(x, wk, 4)
    assert s.shape == (4, 23, 23)
    lib.agree("KV logits S vs Sᵀ (NumPy)", s, s.transpose(0, 2, 1), **F64, quiet=True)
    diagonal = np.diagonal(s, axis1=1, axis2=2)
    pair_max = np.maximum(diagonal[:, :, None], diagonal[:, None, :])
    assert np.all(s <= pair_max + 1e-12)  # Cauchy–Schwarz: k_i·k_j ≤ |k_i||k_j| ≤ max(|k_i|², |k_j|²)


def test_layer_logits_symmetric_in_float64_and_not_with_positions() -> None:
    lib.seed_everything(2)
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    plain = KVSelfAttention(32, 4).double()
    s = plain.logits(x)
    lib.agree("KV layer logits S vs Sᵀ (float64)", s, s.transpose(-1, -2), **F64, quiet=True)
    positional = KVSelfAttention(32, 4, positional=True).double()
    _randomize_pos_map(positional)
    s_pos = positional.logits(x)
    assert (s_pos - s_pos.transpose(-1, -2)).abs().max() > 1e-2


def test_logits_path_equals_forward_path() -> None:
    """softmax(logits) V through the materialized logits equals the flash forward (float64)."""
    lib.seed_everything(3)
    layer = KVSelfAttention(24, 3, positional=True).double()
    _randomize_pos_map(layer)
    x = torch.randn(2, 11, 24, dtype=torch.float64)
    _, v = layer.kv(x).chunk(2, dim=-1)
    v = v.view(2, 11, 3, 8).transpose(1, 2)
    heads = (torch.softmax(layer.logits(x), dim=-1) @ v).transpose(1, 2).reshape(2, 11, 24)
    lib.agree("KV+Pos: materialized vs flash", layer(x), layer.out(heads), **F64, quiet=True)


@pytest.mark.parametrize("d", [16, 64])
def test_parameter_count_drops_by_one_projection(d: int) -> None:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    qkv, kv, kv_pos = SelfAttention(d, 4), KVSelfAttention(d, 4), KVSelfAttention(d, 4, positional=True)
    assert count(qkv) - count(kv) == d * d + d
    assert count(kv_pos) - count(kv) == POS_CHANNELS + 1
    config = TinyEncoderConfig(n_inputs=10, n_tokens=16, n_outputs=10, d_model=d, n_layers=3)
    assert count(TinyEncoder(config)) - count(TinyEncoder(config, KVSelfAttention)) == 3 * (d * d + d)


def test_permutation_equivariance_without_positions() -> None:
    lib.seed_everything(4)
    layer = KVSelfAttention(32, 4).double()
    x = torch.randn(2, 21, 32, dtype=torch.float64)
    perm = torch.randperm(21)
    lib.agree("KV layer: f(Px) vs P f(x)", layer(x[:, perm]), layer(x)[:, perm], **F64, quiet=True)
    with_pos = KVSelfAttention(32, 4, positional=True).double()
    _randomize_pos_map(with_pos)
    assert (with_pos(x[:, perm]) - with_pos(x)[:, perm]).abs().max() > 1e-3


def test_gradients_match_the_materialized_softmax() -> None:
    """Autograd through flash (bias gradient included) equals autograd through softmax(logits) V."""
    lib.seed_everything(5)
    layer = KVSelfAttention(16, 2, positional=True).double()
    _randomize_pos_map(layer)
    x = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 9, 16, dtype=torch.float64)

    def materialized(inp: torch.Tensor) -> torch.Tensor:
        _, v = layer.kv(inp).chunk(2, dim=-1)
        v = v.view(2, 9, 2, 8).transpose(1, 2)
        return layer.out((torch.softmax(layer.logits(inp), dim=-1) @ v).transpose(1, 2).reshape(2, 9, 16))

    grads = []
    for fn in (layer, materialized):
        params = [x, *layer.parameters()]
        grads.append(torch.autograd.grad((fn(x) * upstream).sum(), params))
    names = ["x"] + [name for name, _ in layer.named_parameters()]
    for name, flash_grad, reference_grad in zip(names, *grads):
        lib.agree(f"d{name}", flash_grad, reference_grad, atol=1e-10, rtol=1e-8,
                  reason="float64 gradients of the same function, two evaluation orders", quiet=True)


def test_gradcheck_small() -> None:
    lib.seed_everything(6)
    layer = KVSelfAttention(8, 2, positional=True).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_pos_encoding_2d_layout() -> None:
    p = pos_encoding_2d(7)
    assert p.shape == (7, 7, POS_CHANNELS)
    i, j = 5, 2
    # C = 10: 6 row channels at frequencies 1, 10000^(-1/3), 10000^(-2/3), then 4 column channels
    np.testing.assert_allclose(p[i, j, :2], [np.sin(i), np.cos(i)], atol=1e-15)
    np.testing.assert_allclose(p[i, j, 2:4], [np.sin(i * 10000 ** (-1 / 3)), np.cos(i * 10000 ** (-1 / 3))], atol=1e-15)
    np.testing.assert_allclose(p[i, j, 6:8], [np.sin(j), np.cos(j)], atol=1e-15)
    assert not np.allclose(p[i, j], p[j, i])
    assert pos_encoding_2d(3, channels=4).shape == (3, 3, 4)


def test_code_is_cached_per_length() -> None:
    layer = KVSelfAttention(16, 2, positional=True)
    first = layer.code(8, torch.device("cpu"), torch.float32)
    assert layer.code(8, torch.device("cpu"), torch.float32) is first
    assert layer.code(9, torch.device("cpu"), torch.float32).shape == (9, 9, POS_CHANNELS)


@pytest.mark.parametrize("positional", [False, True])
def test_usable_as_the_encoder_mixer(positional: bool) -> None:
    lib.seed_everything(7)
    config = TinyEncoderConfig(n_inputs=10, n_tokens=16, n_outputs=10, per_token=True)
    model = TinyEncoder(config, partial(KVSelfAttention, positional=positional))
    logits = model(torch.randint(0, 10, (3, 16)))
    logits.sum().backward()
    assert logits.shape == (3, 16, 10)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="n_heads: expected a divisor"):
        KVSelfAttention(30, 4)
    with pytest.raises(ValueError, match="positional: expected a bool"):
        KVSelfAttention(16, 2, positional="yes")
    with pytest.raises(ValueError, match=r"x: expected a floating \(B, N, 16\)"):
        KVSelfAttention(16, 2)(torch.randn(2, 5, 8))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8))
    with pytest.raises(ValueError, match="Wk: expected 8 rows"):
        kv_logits_np(x, rng.standard_normal((6, 8)), 2)
    with pytest.raises(ValueError, match="x: expected a 2-d array"):
        kv_logits_np(x[None], rng.standard_normal((8, 8)), 2)
    with pytest.raises(ValueError, match="w: expected the"):
        kv_logits_np(x, rng.standard_normal((8, 8)), 2, pos=pos_encoding_2d(5))
    with pytest.raises(ValueError, match=r"w: expected shape \(10,\)"):
        kv_logits_np(x, rng.standard_normal((8, 8)), 2, pos=pos_encoding_2d(5), w=np.ones(3))
    with pytest.raises(ValueError, match=r"pos: expected shape \(5, 5, C\)"):
        kv_logits_np(x, rng.standard_normal((8, 8)), 2, pos=pos_encoding_2d(4), w=np.ones(10))
    with pytest.raises(ValueError, match="Wv: expected shape"):
        kv_attention_np(x, rng.standard_normal((8, 8)), rng.standard_normal((8, 7)), 2)
    with pytest.raises(ValueError, match="n: expected a positive int"):
        pos_encoding_2d(0)


# ---------------------------------------------------------------- exercise 01.4a


def _kv_attention_solution(x: np.ndarray, Wk: np.ndarray, Wv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The solution of solutions/01_attention.py, restated."""
    k = x @ Wk
    logits = k @ k.T / np.sqrt(Wk.shape[1])
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True) @ (x @ Wv), logits


def _no_scale(x, Wk, Wv):
    k = x @ Wk
    logits = k @ k.T
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True) @ (x @ Wv), logits


def _softmax_over_columns(x, Wk, Wv):
    out, logits = _kv_attention_solution(x, Wk, Wv)
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    return weights / weights.sum(axis=0, keepdims=True) @ (x @ Wv), logits


def _unstable_softmax(x, Wk, Wv):
    k = x @ Wk
    logits = k @ k.T / np.sqrt(Wk.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True) @ (x @ Wv), logits


def _value_as_query(x, Wk, Wv):
    """A QKV habit: queries from another projection (here Wk with its rows rolled) break the symmetry."""
    q, k = x @ np.roll(Wk, 1, axis=0), x @ Wk
    logits = q @ k.T / np.sqrt(Wk.shape[1])
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True) @ (x @ Wv), logits


def test_exercise_passes_on_the_solution(capsys) -> None:
    check("01.4a", _kv_attention_solution)
    assert "✓ 01.4a kv_attention: all 5 cases pass" in capsys.readouterr().out


def test_exercise_stub_error_propagates() -> None:
    def stub(x, Wk, Wv):
        raise NotImplementedError("Exercise 01.4a: kv_attention")

    with pytest.raises(NotImplementedError, match="01.4a"):
        check("01.4a", stub)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (_no_scale, "case 1 of 5.*logits"),
        (_softmax_over_columns, "case 1 of 5.*out"),
        (_unstable_softmax, "case 4 of 5.*out"),
        (_value_as_query, "case 1 of 5.*logits vs logitsᵀ"),
        (lambda x, Wk, Wv: _kv_attention_solution(x, Wk, Wv)[0], "should return a pair"),
        (lambda x, Wk, Wv: (_kv_attention_solution(x, Wk, Wv)[0][:, :1], x), "out it returned has shape"),
        (lambda x, Wk, Wv: tuple(a.astype(np.float32) for a in _kv_attention_solution(x, Wk, Wv)), "dtype float32"),
    ],
)
def test_exercise_catches_typical_mistakes(wrong: Callable, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check("01.4a", wrong)
