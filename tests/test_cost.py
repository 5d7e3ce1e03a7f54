"""lib.cost: the analytic counts against a hand count, PyTorch's FLOP counter and the model itself."""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lib import cost
from lib.models.decoder import Decoder, DecoderConfig

CONFIGS = [
    DecoderConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, max_seq_len=24),
    DecoderConfig(vocab_size=37, d_model=32, n_layers=3, n_heads=2, max_seq_len=24, mlp="swiglu", norm="rmsnorm",
                  positions="learned", tie_embeddings=False, prenorm=False, attention="naive"),
    DecoderConfig(vocab_size=50, d_model=24, n_layers=1, n_heads=3, max_seq_len=24, positions="alibi", d_ff=40),
]


def counted_flops(model: Decoder, ids: torch.Tensor, cache=None) -> int:
    """What torch.utils.flop_counter counts for one forward pass (its rule is also 2·m·n·k per matmul).

    The counter does not see the CPU flash kernel SDPA picks for a causal prefill, so the models
    below use the naive backend: the same products, each an explicit matmul.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids, cache)
    return counter.get_total_flops()


def test_hand_count_of_a_tiny_config():
    # d = 8, two heads, one layer, V = 10, GELU (ff = 32); a prefill of 3 tokens, batch 1
    config = DecoderConfig(vocab_size=10, d_model=8, n_layers=1, n_heads=2, max_seq_len=8)
    f = cost.prefill_flops(config, 3)
    assert (f.qkv, f.scores, f.weighted_sum, f.out_proj, f.mlp, f.lm_head) == (
        2 * 3 * 8 * 24,  # (3 × 8) @ (8 × 24)
        2 * 2 * 3 * 3 * 4,  # per head (3 × 4) @ (4 × 3), two heads
        2 * 2 * 3 * 3 * 4,  # per head (3 × 3) @ (3 × 4)
        2 * 3 * 8 * 8,
        2 * 3 * 8 * 32 + 2 * 3 * 32 * 8,
        2 * 3 * 8 * 10,
    )
    assert f.total == 1152 + 144 + 144 + 384 + 3072 + 480
    # causal skipping: 1 + 2 + 3 = 6 of the 9 score entries per head
    assert cost.prefill_flops(config, 3, skip_masked=True).scores == 2 * 2 * 6 * 4


@pytest.mark.parametrize("config", CONFIGS, ids=["rope-gelu", "learned-swiglu-postnorm", "alibi-d_ff"])
def test_flops_match_torch_flop_counter(config):
    torch.manual_seed(0)
    model = Decoder(dataclasses.replace(config, attention="naive"))
    ids = torch.randint(0, config.vocab_size, (2, 13))
    assert counted_flops(model, ids) == cost.prefill_flops(config, 13, batch=2).total
    cache = model.new_cache(2)
    model(ids[:, :9], cache)
    assert counted_flops(model, ids[:, 9:10], cache) == cost.decode_flops(config, 9, batch=2).total
    assert counted_flops(model, ids[:, 10:], cache) == cost.forward_flops(config, 3, cached=10, batch=2).total


@pytest.mark.parametrize("config", CONFIGS + [DecoderConfig(vocab_size=2048)], ids=lambda c: str(c.vocab_size))
def test_parameter_count_matches_the_model(config):
    assert cost.parameter_count(config) == Decoder(config).num_parameters()
    assert cost.parameter_bytes(config, 4) == 4 * cost.parameter_count(config)


def test_kv_cache_bytes_match_the_cache():
    config = CONFIGS[0]
    cache = Decoder(config).new_cache(3)  # fp32, max_seq_len positions
    allocated = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert cost.kv_cache_bytes(config, 3, config.max_seq_len, bytes_per_element=4) == allocated
    assert cost.kv_cache_bytes(config, batch=1, length=10) == 2 * 2 * 1 * 10 * 32 * 2  # bf16 default


def test_decode_per_token_flops_grow_slowly_prefill_fast():
    config = DecoderConfig(vocab_size=2048, max_seq_len=1024)
    short, long = cost.decode_flops(config, 64).total, cost.decode_flops(config, 512).total
    assert long / short < 1.5  # only the attention terms grow with the context
    assert cost.prefill_flops(config, 513).total / long > 400  # recomputing the prefix


def test_roofline_classification():
    ridge = cost.H200_BF16_DENSE_FLOPS / cost.H200_HBM_BANDWIDTH  # ≈ 206 FLOP/byte
    memory = cost.roofline(1e9, 1e9)  # intensity 1
    assert memory.bound == "memory" and memory.time_s == pytest.approx(1e9 / 4.8e12)
    assert memory.attainable_flops == pytest.approx(4.8e12) and memory.ridge == pytest.approx(ridge)
    compute = cost.roofline(1e12, 1e9)  # intensity 1000
    assert compute.bound == "compute" and compute.time_s == pytest.approx(1e12 / 989e12)
    assert cost.roofline(10.0, 1.0, peak_flops=10.0, peak_bandwidth=1.0).bound == "compute"  # on the ridge
    assert cost.arithmetic_intensity(6.0, 3.0) == 2.0


def test_decoding_one_token_is_memory_bound_on_an_h200():
    config = DecoderConfig(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, max_seq_len=4096)
    decode = cost.decode_flops(config, 1000).total
    assert cost.roofline(decode, cost.forward_bytes(config, 1, cached=1000)).bound == "memory"
    prefill = cost.prefill_flops(config, 2048).total
    assert cost.roofline(prefill, cost.forward_bytes(config, 2048)).bound == "compute"


def test_bad_input():
    with pytest.raises(TypeError, match=r"config: expected a DecoderConfig, got dict"):
        cost.parameter_count({"vocab_size": 10})
    with pytest.raises(ValueError, match=r"tokens: expected a positive int, got 0"):
        cost.forward_flops(CONFIGS[0], 0)
    with pytest.raises(ValueError, match=r"cached: expected an int ≥ 0, got -1"):
        cost.forward_flops(CONFIGS[0], 1, cached=-1)
    with pytest.raises(ValueError, match=r"bytes_moved: expected a number > 0, got 0"):
        cost.roofline(1.0, 0)
    with pytest.raises(ValueError, match=r"peak_bandwidth: expected a number > 0, got -1"):
        cost.roofline(1.0, 1.0, peak_bandwidth=-1)


@pytest.mark.parametrize("options", [dict(mixer="causal_act"), dict(mlp="causal_act"),
                                     dict(mixer="causal_act", mlp="causal_act", causal_context=True)])
def test_parameter_count_of_attention_free_decoders(options):
    config = DecoderConfig(vocab_size=50, d_model=64, n_layers=2, n_heads=4, **options)
    assert cost.parameter_count(config) == Decoder(config).num_parameters()


def test_flops_refuse_an_attention_free_decoder():
    config = DecoderConfig(vocab_size=50, d_model=64, n_layers=2, n_heads=4, mixer="causal_act")
    with pytest.raises(ValueError, match=r"^config: expected an attention decoder \(mixer='attention'\)"):
        cost.prefill_flops(config, 16)
