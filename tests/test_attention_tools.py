"""Section 01.1's tools: peak tensor memory, the attention benchmark, the decoder's "flash" backend."""

from __future__ import annotations

import pytest
import torch

import lib
from lib.attention import attention_ref, flash_attention
from lib.benchmarks.attention import attention_flops, attention_table, naive_attention
from lib.memory import PeakMemory, peak_tensor_bytes
from lib.models.decoder import Decoder, DecoderConfig, attention_backends


def test_peak_counts_what_is_alive_at_once():
    def two_then_one() -> torch.Tensor:
        a = torch.ones(1024)          # 4 KiB
        b = torch.ones(2048)          # 8 KiB: 12 KiB alive here
        del a, b
        return torch.ones(256)        # 1 KiB

    assert peak_tensor_bytes(two_then_one) == 12 * 1024


def test_views_count_once_and_inputs_not_at_all():
    x = torch.ones(4096)
    assert peak_tensor_bytes(lambda: x.view(64, 64).t()) == 0
    assert peak_tensor_bytes(lambda: x * 2) == 4096 * 4


def test_memory_naive_is_quadratic_and_tiled_is_linear():
    naive, tiled = [], []
    with torch.no_grad():
        for n in (256, 512, 1024):
            q, k, v = (torch.randn(1, 2, n, 16) for _ in range(3))
            naive.append(peak_tensor_bytes(lambda: naive_attention(q, k, v)))
            tiled.append(peak_tensor_bytes(lambda: flash_attention(q, k, v, block_m=64, block_n=64)))
    # Doubling N from 512 to 1024 adds 4× (N²) or 2× (N) what doubling from 256 to 512 added.
    assert 3.8 < (naive[2] - naive[1]) / (naive[1] - naive[0]) < 4.2
    assert 1.8 < (tiled[2] - tiled[1]) / (tiled[1] - tiled[0]) < 2.2


def test_peak_memory_refuses_a_non_callable():
    with pytest.raises(TypeError, match="^fn: expected a zero-argument callable"):
        peak_tensor_bytes(42)
    assert isinstance(PeakMemory(), torch.utils._python_dispatch.TorchDispatchMode)


@pytest.mark.parametrize("causal", [False, True])
def test_naive_attention_is_attention(causal):
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=torch.float64) for _ in range(3))
    expected = attention_ref(q.numpy(), k.numpy(), v.numpy(), causal=causal)[0]
    lib.agree("naive attention", naive_attention(q, k, v, causal=causal), expected, atol=1e-12, rtol=1e-10,
              quiet=True, reason="float64, same formula")


def test_attention_flops():
    assert attention_flops(1, 1, 2, 3, causal=False, backward=False) == 4 * 2 * 2 * 3
    assert attention_flops(2, 4, 1024, 64, causal=True, backward=True) == 4 * 2 * 4 * 1024**2 * 64 * 5 // 4


def test_attention_table_on_the_cpu():
    table = attention_table(1, 2, 64, 16, causal=True, backward=True)
    providers = [t.provider for t in table.timings]
    assert providers == ["NumPy reference", "naive torch", "lib flash (256² tiles)", "torch SDPA"]
    assert table.reference == "NumPy reference" and table.best == "torch SDPA"
    assert all(row["tflops"] for row in table.rows()) and not any(row["pct_of_peak"] for row in table.rows())


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_flash_backend_is_a_drop_in_for_the_decoder(positions):
    assert "flash" in attention_backends()
    config = dict(vocab_size=40, d_model=32, n_layers=2, n_heads=4, max_seq_len=48, positions=positions)
    torch.manual_seed(0)
    reference = Decoder(DecoderConfig(**config, attention="naive")).double()
    flash = Decoder(DecoderConfig(**config, attention="flash")).double()
    flash.load_state_dict(reference.state_dict())
    ids = torch.randint(0, 40, (2, 37))
    lib.agree("decoder logits, flash vs naive", flash(ids), reference(ids), atol=1e-10, rtol=1e-10, quiet=True,
              reason="float64, the same attention computed in tiles")
    cache_ref, cache_flash = reference.new_cache(2), flash.new_cache(2)
    reference(ids[:, :30], cache_ref), flash(ids[:, :30], cache_flash)
    lib.agree("decode step with a cache", flash(ids[:, 30:31], cache_flash), reference(ids[:, 30:31], cache_ref),
              atol=1e-10, rtol=1e-10, quiet=True, reason="float64; one query row against 31 cached keys")
