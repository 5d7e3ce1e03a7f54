"""Benchmark of the KV cache: the cost of one generated token as the context grows.

For a ≈1M-parameter decoder (d_model 128, 4 layers, 4 heads, vocabulary 2048, float32) and a
context of L tokens, one step of greedy generation is timed two ways:

* ``recompute`` (the reference): the whole sequence of L + 1 tokens goes through the model again,
  what ``generate(use_cache=False)`` does each step. Its cost grows with L (quadratically in the
  attention terms).
* ``kv_cache``: L tokens sit in the cache; only the newest token goes through the model, attending
  to the cached keys. Its cost is nearly flat in L.

Beside the measured speed-up the summary prints the FLOP ratio ``prefill(L + 1) / decode(L)`` from
:mod:`lib.cost`: the speed-up the arithmetic alone would predict. On a CPU the cached step is
small enough that per-operation overhead, not arithmetic, sets its time, so the measured ratio
stays below the FLOP ratio.
"""

from __future__ import annotations

from typing import Callable

import torch

from lib import cost
from lib.bench import BenchTable, compare, register
from lib.models.decoder import Decoder, DecoderConfig

__all__ = ["BENCH_CONFIG", "CONTEXTS", "kv_cache_benchmark", "kv_cache_table"]

BENCH_CONFIG = DecoderConfig(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, max_seq_len=640)
CONTEXTS = (64, 128, 256, 512)


def _next_token_fns(model: Decoder, ids: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """The two ways to get the token after ``ids`` (1, L + 1) from ``model``, as zero-argument callables."""
    context = ids.shape[1] - 1
    cache = model.new_cache(ids.shape[0])
    with torch.no_grad():
        model(ids[:, :context], cache)

    @torch.no_grad()
    def recompute() -> torch.Tensor:
        return model(ids)[:, -1].argmax(-1)

    @torch.no_grad()
    def kv_cache() -> torch.Tensor:
        cache.truncate(context)  # forget the previous call's token: every call decodes at context L
        return model(ids[:, context:], cache)[:, -1].argmax(-1)

    return {"recompute": recompute, "kv_cache": kv_cache}


def kv_cache_table(model: Decoder, context: int, device: str) -> BenchTable:
    """Time one generated token after ``context`` tokens, recomputed vs from the KV cache."""
    c = model.config
    g = torch.Generator().manual_seed(context)
    ids = torch.randint(0, c.vocab_size, (1, context + 1), generator=g).to(device)
    fns = _next_token_fns(model, ids)
    torch.testing.assert_close(fns["kv_cache"](), fns["recompute"]())  # same token both ways
    return compare(
        "kv_cache", fns,
        shape=f"B1·context {context}·d{c.d_model}·{c.n_layers} layers",
        dtype=str(model.tok_emb.weight.dtype).removeprefix("torch."),
        reference="recompute", device=device,
    )


def flop_ratio(config: DecoderConfig, context: int) -> float:
    """What the arithmetic predicts: FLOPs of recomputing L + 1 tokens over FLOPs of decoding one at context L."""
    return cost.prefill_flops(config, context + 1).total / cost.decode_flops(config, context).total


@register("kv_cache")
def kv_cache_benchmark(device: str) -> list[BenchTable]:
    """``make bench`` / ``make bench-gpu``: :func:`kv_cache_table` at each of :data:`CONTEXTS`, then a summary."""
    torch.manual_seed(0)
    model = Decoder(BENCH_CONFIG).to(device)
    tables = [kv_cache_table(model, context, device) for context in CONTEXTS]
    print(f"kv_cache: one token, {model.num_parameters():,} parameters, on {tables[0].machine}")
    print(f"{'context':>8} {'recompute ms':>13} {'kv_cache ms':>12} {'measured ×':>11} {'FLOP ratio ×':>13}")
    for context, table in zip(CONTEXTS, tables):
        print(
            f"{context:>8} {table.timing('recompute').median_ms:>13.3f} {table.timing('kv_cache').median_ms:>12.3f}"
            f" {table.speedup('kv_cache', 'recompute'):>11.1f} {flop_ratio(BENCH_CONFIG, context):>13.1f}"
        )
    print()
    return tables
