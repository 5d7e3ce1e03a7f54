"""The tiny decoder: cached decoding equals the full pass, backends agree, sampling, capture, bad input.

Models are built with weights larger than the training initialisation (see :func:`tiny_model`) so
that attention is peaked and a wrong mask, position or cache slot moves the logits visibly.
"""

import dataclasses

import pytest
import torch

from lib import agree
from lib.models.decoder import (
    POSITIONS,
    Decoder,
    DecoderConfig,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    capture,
    causal_mask,
    register_attention_backend,
    rope_angles,
    sdpa_attention,
)

FP32 = dict(atol=1e-5, rtol=1e-4, reason="same math in fp32, different matmul shapes: rounding only")
BACKENDS = ("naive", "sdpa")
# (norm, mlp, prenorm): each norm and each MLP, with pre- and post-norm
VARIANTS = [("layernorm", "gelu", True), ("rmsnorm", "swiglu", True), ("layernorm", "swiglu", False),
            ("rmsnorm", "gelu", False)]
VOCAB = 37


def tiny_config(**overrides) -> DecoderConfig:
    """Three heads of size 8 (ALiBi's non-power-of-two slopes), two layers, 16 positions."""
    base = dict(vocab_size=VOCAB, d_model=24, n_layers=2, n_heads=3, max_seq_len=16)
    return DecoderConfig(**(base | overrides))


def tiny_model(config: DecoderConfig, seed: int = 0) -> Decoder:
    """A decoder whose matrices are ~N(0, 4/fan_in): scores of order one, so attention is not uniform."""
    torch.manual_seed(seed)
    model = Decoder(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 2.0 / p.shape[1] ** 0.5)
    return model


def token_ids(batch: int = 2, length: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the KV cache


@pytest.mark.parametrize("norm, mlp, prenorm", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("positions", POSITIONS)
def test_cached_decoding_equals_full_pass(positions, backend, norm, mlp, prenorm):
    model = tiny_model(tiny_config(positions=positions, attention=backend, norm=norm, mlp=mlp, prenorm=prenorm))
    ids = token_ids()
    full = model(ids)
    for chunks in ([4, 1, 3, 1, 2], [1] * 11):  # prefill then mixed chunks; token by token
        cache, start, parts = model.new_cache(2), 0, []
        for t in chunks:
            parts.append(model(ids[:, start:start + t], cache))
            start += t
        assert cache.length == 11
        agree(f"cached {chunks[:2]}… vs full, {positions}/{backend}/{norm}/{mlp}/pre={prenorm}",
              torch.cat(parts, dim=1), full, quiet=True, **FP32)


def test_cache_truncate_rolls_back():
    model = tiny_model(tiny_config())
    ids = token_ids()
    cache = model.new_cache(2)
    model(ids[:, :6], cache)
    model(token_ids(seed=9)[:, :3], cache)  # three tokens that get rejected
    cache.truncate(6)
    agree("after truncate", model(ids[:, 6:], cache), model(ids)[:, 6:], **FP32)
    with pytest.raises(ValueError, match=r"length: expected an int in \[0, 11\], got 12"):
        cache.truncate(12)


# ----------------------------------------------------------------------------- backends and causality


@pytest.mark.parametrize("positions", POSITIONS)
def test_naive_and_sdpa_backends_agree(positions):
    sdpa = tiny_model(tiny_config(positions=positions, attention="sdpa"))
    naive = Decoder(dataclasses.replace(sdpa.config, attention="naive"))
    naive.load_state_dict(sdpa.state_dict())
    ids = token_ids()
    agree(f"naive vs sdpa, {positions}", naive(ids), sdpa(ids), **FP32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("positions", POSITIONS)
def test_future_tokens_do_not_change_earlier_logits(positions, backend):
    model = tiny_model(tiny_config(positions=positions, attention=backend))
    ids = token_ids()
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % VOCAB
    before, after = model(ids), model(changed)
    agree(f"causal prefix, {positions}/{backend}", after[:, :5], before[:, :5], quiet=True,
          atol=1e-6, rtol=1e-6, reason="rows are independent: at most a different matmul blocking")
    assert (after[:, 5] - before[:, 5]).abs().max() > 1e-3  # ...and the changed token does matter


def test_causal_mask_is_bottom_right_aligned():
    mask = causal_mask(2, 5)  # queries at positions 3 and 4 of 5
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_registered_backend_is_used():
    calls = []

    def counting(q, k, v, *, causal, bias):
        calls.append(q.shape)
        return sdpa_attention(q, k, v, causal=causal, bias=bias)

    register_attention_backend("counting", counting)
    model = tiny_model(tiny_config(attention="counting"))
    model(token_ids())
    assert len(calls) == 2  # one per layer
    with pytest.raises(ValueError, match="built-in"):
        register_attention_backend("sdpa", counting)


def test_alibi_slopes_follow_the_paper():
    agree("ALiBi slopes, 8 heads", alibi_slopes(8), torch.tensor([2.0 ** -k for k in range(1, 9)]),
          atol=0, rtol=1e-7, reason="powers of two, exact in fp32", quiet=True)
    # 6 heads: the 4-head slopes 2^-2, 2^-4, 2^-6, 2^-8, then every other 8-head slope: 2^-1, 2^-3
    agree("ALiBi slopes, 6 heads", alibi_slopes(6), torch.tensor([2.0 ** -k for k in (2, 4, 6, 8, 1, 3)]),
          atol=0, rtol=1e-7, reason="powers of two, exact in fp32", quiet=True)


def test_alibi_bias_penalises_distance():
    slopes = alibi_slopes(2)  # 1/16, 1/256
    bias = alibi_bias(slopes, torch.tensor([3]), tk=4)  # the query at position 3, keys 0…3
    expected = -slopes[:, None, None] * torch.tensor([3.0, 2.0, 1.0, 0.0])
    agree("ALiBi bias −m·(i − j)", bias, expected, atol=0, rtol=1e-7, reason="small integers times slopes",
          quiet=True)


def test_rope_scores_depend_on_relative_position_only():
    q, k = torch.randn(2, 1, 1, 1, 16, dtype=torch.float64).unbind(0)
    angles = rope_angles(12, 16).double()

    def score(m: int, n: int) -> torch.Tensor:
        rq = apply_rope(q, angles[m].cos(), angles[m].sin())
        rk = apply_rope(k, angles[n].cos(), angles[n].sin())
        return (rq * rk).sum()

    agree("⟨R_5 q, R_2 k⟩ = ⟨R_10 q, R_7 k⟩", score(10, 7), score(5, 2), atol=1e-6, rtol=1e-6,
          reason="angles tabulated in fp32", quiet=True)
    assert (score(5, 2) - score(5, 4)).abs() > 1e-3  # ...and the distance matters


# ----------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def generator_model() -> Decoder:
    return tiny_model(tiny_config(positions="rope"))


def test_generate_is_deterministic_per_seed_and_leaves_global_rng(generator_model):
    prompt = token_ids(batch=2, length=3)
    state = torch.random.get_rng_state()
    a = generator_model.generate(prompt, 8, seed=3)
    b = generator_model.generate(prompt, 8, seed=3)
    c = generator_model.generate(prompt, 8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.shape == (2, 11) and torch.equal(a[:, :3], prompt)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("positions", POSITIONS)
def test_greedy_with_and_without_cache_agree(positions):
    model = tiny_model(tiny_config(positions=positions))
    prompt = token_ids(batch=2, length=4)
    cached = model.generate(prompt, 10, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, 10, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)


def test_top_k_one_and_tiny_top_p_are_greedy(generator_model):
    prompt = token_ids(batch=2, length=3)
    greedy = generator_model.generate(prompt, 8, temperature=0)
    assert torch.equal(generator_model.generate(prompt, 8, top_k=1, seed=5), greedy)
    assert torch.equal(generator_model.generate(prompt, 8, top_p=1e-6, seed=5), greedy)


def test_generate_accepts_one_sequence(generator_model):
    out = generator_model.generate(torch.tensor([1, 2, 3]), 4, temperature=0.7, top_k=5, top_p=0.9)
    assert out.shape == (7,) and out.tolist()[:3] == [1, 2, 3]
    assert torch.equal(generator_model.generate(torch.tensor([1, 2]), 0), torch.tensor([1, 2]))


# ----------------------------------------------------------------------------- capture


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_capture_attention_probs_are_row_stochastic_and_causal(positions):
    model = tiny_model(tiny_config(positions=positions, attention="sdpa"))
    ids = token_ids(length=9)
    expected = model(ids)
    with capture(model) as acts:
        logits = model(ids)
    agree("logits while capturing", logits, expected, quiet=True, **FP32)
    assert sorted(acts["attn_probs"]) == [0, 1] and sorted(acts["residual"]) == [0, 1]
    assert acts["residual"][1].shape == (2, 9, 24)
    for probs in acts["attn_probs"].values():
        assert probs.shape == (2, 3, 9, 9)
        agree("row sums", probs.sum(-1), torch.ones(2, 3, 9), quiet=True,
              atol=1e-6, rtol=0, reason="softmax rows in fp32")
        assert (probs.triu(diagonal=1) == 0).all()  # nothing from the future
    assert all(block.attn.probs_sink is None and not block._forward_hooks for block in model.blocks)


def test_capture_with_a_cache_sees_the_cached_keys():
    model = tiny_model(tiny_config())
    ids = token_ids(length=9)
    cache = model.new_cache(2)
    model(ids[:, :6], cache)
    with capture(model, what="attn_probs") as acts:
        model(ids[:, 6:], cache)
    assert list(acts) == ["attn_probs"] and acts["attn_probs"][0].shape == (2, 3, 3, 9)
    assert (acts["attn_probs"][0][..., 0, 7:] == 0).all()  # the query at position 6 sees keys 0…6
    with pytest.raises(ValueError, match=r"what: expected one of attn_probs, residual, got 'mlp'"):
        with capture(model, what=("residual", "mlp")):
            pass


# ----------------------------------------------------------------------------- checkpoints and bad input


def test_config_round_trip_and_default_widths():
    config = tiny_config(positions="alibi", mlp="swiglu")
    assert DecoderConfig.from_dict(config.to_dict()) == config
    assert DecoderConfig(vocab_size=10).ffn_dim == 512  # 4 · 128
    assert DecoderConfig(vocab_size=10, mlp="swiglu").ffn_dim == 352  # 8/3 · 128 = 341.3 → multiple of 16


def test_from_state_round_trip():
    model = tiny_model(tiny_config(tie_embeddings=False))
    copy = Decoder.from_state(model.config.to_dict(), model.state_dict())
    ids = token_ids()
    assert torch.equal(copy(ids), model(ids))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(positions="absolute"), r"positions: expected one of alibi, learned, none, .*, got 'absolute'"),
        (dict(norm="batchnorm"), r"norm: expected one of layernorm, rmsnorm, got 'batchnorm'"),
        (dict(mlp="relu"), r"mlp: expected one of causal_act, gelu, swiglu, got 'relu'"),
        (dict(attention="telepathy"), r"attention: expected one of 'naive', 'sdpa'.*got 'telepathy'"),
        (dict(d_model=25), r"d_model: expected a multiple of n_heads=3, got 25"),
        (dict(d_model=15, positions="rope"), r"d_model: RoPE .* even, got 5"),
        (dict(vocab_size=0), r"vocab_size: expected a positive int, got 0"),
        (dict(prenorm="yes"), r"prenorm: expected a bool, got 'yes'"),
        (dict(mixer="mamba"), r"mixer: expected one of attention, causal_act, got 'mamba'"),
        (dict(causal_mode="median"), r"causal_mode: expected one of max, mean, min, got 'median'"),
        (dict(causal_context=1), r"causal_context: expected a bool, got 1"),
    ],
)
def test_bad_config(overrides, message):
    wrong_type = {"prenorm", "causal_context"} & set(overrides)
    with pytest.raises(TypeError if wrong_type else ValueError, match=message):
        tiny_config(**overrides)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown DecoderConfig field\(s\) \['heads'\]"):
        DecoderConfig.from_dict({"vocab_size": 10, "heads": 4})


def test_bad_ids():
    model = tiny_model(tiny_config())
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 37\) \(vocab_size\), got .* \[0, 37\]"):
        model(torch.tensor([[0, 37]]))
    with pytest.raises(ValueError, match=r"got values in \[-1, 3\]"):
        model(torch.tensor([[-1, 3]]))
    with pytest.raises(TypeError, match=r"ids: expected one of int64, int32, got torch.float32"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"ids: expected a 2-d array \(batch, tokens\), got shape \(3,\)"):
        model(torch.tensor([1, 2, 3]))


def test_context_too_long():
    model = tiny_model(tiny_config())
    with pytest.raises(ValueError, match=r"context of 17 tokens \(0 cached \+ 17 new\) exceeds max_seq_len 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 12, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=r"context of 17 tokens \(12 cached \+ 5 new\) exceeds max_seq_len 16"):
        model(torch.zeros(1, 5, dtype=torch.long), cache)
    assert cache.length == 12  # a refused pass leaves the cache as it was
    with pytest.raises(ValueError, match=r"prompt 4 \+ 13 new = 17 tokens exceeds max_seq_len 16"):
        model.generate(torch.zeros(4, dtype=torch.long), 13)


def test_bad_sampling_arguments(generator_model):
    prompt = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"temperature: expected a number ≥ 0"):
        generator_model.generate(prompt, 2, temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_p: expected a number in \(0, 1\], got 0"):
        generator_model.generate(prompt, 2, top_p=0)
    with pytest.raises(ValueError, match=r"top_k: expected a positive int, got 0"):
        generator_model.generate(prompt, 2, top_k=0)


def test_checkpoint_mismatch_is_named():
    model = tiny_model(tiny_config())
    state = model.state_dict()
    with pytest.raises(ValueError, match=r"'tok_emb.weight' has shape \(37, 24\), the config expects \(40, 24\)"):
        Decoder.from_state(tiny_config(vocab_size=40).to_dict(), state)
    with pytest.raises(ValueError, match=r"missing tensor 'blocks.2.norm1.weight'"):
        Decoder.from_state(tiny_config(n_layers=3), state)
    with pytest.raises(ValueError, match=r"unexpected tensor 'pos_emb.weight'"):
        Decoder.from_state(tiny_config(), tiny_model(tiny_config(positions="learned")).state_dict())
    untied = tiny_model(tiny_config(tie_embeddings=False)).state_dict()
    with pytest.raises(ValueError, match=r"'lm_head.weight' differs from 'tok_emb.weight' but the config ties them"):
        Decoder.from_state(tiny_config(), untied)


# ----------------------------------------------------------------------------- causal-activation options (01.6)

CAUSAL_VARIANTS = [  # (mixer, mlp, causal_mode, causal_context, prenorm)
    ("causal_act", "gelu", "min", False, True),
    ("causal_act", "gelu", "min", True, True),
    ("attention", "causal_act", "max", False, True),
    ("causal_act", "causal_act", "mean", True, False),
]


def causal_config(mixer: str, mlp: str, mode: str, context: bool, prenorm: bool) -> DecoderConfig:
    return tiny_config(mixer=mixer, mlp=mlp, causal_mode=mode, causal_context=context, prenorm=prenorm)


def test_default_config_dict_is_unchanged_so_zoo_checkpoints_still_load():
    """The new fields stay out of a plain transformer's dict: a checkpoint written before them compares equal."""
    plain = tiny_config().to_dict()
    assert not {"mixer", "causal_mode", "causal_context"} & set(plain)
    assert DecoderConfig.from_dict(plain) == tiny_config()
    causal = causal_config("causal_act", "causal_act", "max", True, True)
    assert causal.to_dict()["mixer"] == "causal_act"
    assert DecoderConfig.from_dict(causal.to_dict()) == causal


@pytest.mark.parametrize("mixer, mlp, mode, context, prenorm", CAUSAL_VARIANTS)
def test_causal_variants_are_causal_and_cache_equals_full_pass(mixer, mlp, mode, context, prenorm):
    model = tiny_model(causal_config(mixer, mlp, mode, context, prenorm)).eval()
    ids = token_ids(length=13)
    with torch.no_grad():
        full = model(ids)
        changed = ids.clone()
        changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
        assert torch.equal(model(changed)[:, :7], full[:, :7])  # the future never reaches the past
        cache = model.new_cache(ids.shape[0])
        pieces = [model(ids[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 7), (7, 13)]]
    agree(f"cached vs full pass, {mixer}/{mlp}/{mode}/context={context}", torch.cat(pieces, dim=1), full, **FP32)
    assert cache.length == 13


def test_causal_cache_truncate_rolls_back():
    model = tiny_model(causal_config("causal_act", "causal_act", "min", True, True)).eval()
    ids, other = token_ids(length=10), token_ids(length=10, seed=5)
    with torch.no_grad():
        cache = model.new_cache(2)
        model(ids[:, :6], cache)
        model(other[:, 6:9], cache)  # a rejected draft
        cache.truncate(6)
        tail = model(ids[:, 6:], cache)
        expected = model(ids)[:, 6:]
    agree("cached after truncate vs full pass", tail, expected, **FP32)


def test_attention_free_model_has_no_attention_parameters_or_kv():
    config = tiny_config(mixer="causal_act")
    model = tiny_model(config)
    assert not any(".attn." in name for name, _ in model.named_parameters())
    baseline = tiny_model(tiny_config())
    assert baseline.num_parameters() - model.num_parameters() == config.n_layers * 4 * config.d_model**2
    cache = model.new_cache(3)
    assert cache.keys == [] and sorted(cache.inputs) == ["0.mixer", "1.mixer"]
    assert cache.batch_size == 3 and cache.max_len == config.max_seq_len


def test_causal_generate_with_and_without_cache_agree():
    model = tiny_model(causal_config("causal_act", "causal_act", "min", True, True)).eval()
    prompt = torch.tensor([[3, 1, 4], [1, 5, 9]])
    cached = model.generate(prompt, 8, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, 8, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)


def test_causal_model_bad_cache_and_capture():
    model = tiny_model(tiny_config(mixer="causal_act"))
    attention_cache = tiny_model(tiny_config()).new_cache(2)
    with pytest.raises(ValueError, match=r"cache: expected one for batch 2, 0 attention layers .* got batch 2, 2"):
        model(token_ids(), attention_cache)
    with pytest.raises(ValueError, match=r"what: 'attn_probs' needs attention layers, .* mixer is 'causal_act'"):
        with capture(model):
            pass
    with capture(model, "residual") as acts:
        model(token_ids())
    assert sorted(acts["residual"]) == [0, 1]
