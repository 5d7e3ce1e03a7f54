"""Benchmarks of chapter 07's decoders on the zoo's character models (``make bench``, CPU).

Two comparisons, each on the same prompts for every provider (four 32-character prompts of the
pydoc validation split, 96 new characters each; one torch thread, as in the chapter's notebooks:
at batch 1 a second thread only adds synchronisation to each small call):

* ``sample 96 characters (T = 1)`` — autoregressive sampling from ``char-target`` with its KV cache
  (the reference) against speculative sampling (07.1) with the 5-gram count draft and with the
  one-layer ``char-draft``, each at the γ the chapter found best. The texts differ (the
  random streams differ) but their law is the target's. Target calls per character are printed
  below the table: they are deterministic, the times are not.
* ``greedy 96 characters`` — greedy decoding with the KV cache (the reference) against Jacobi
  decoding (07.3) and lookahead decoding (07.4); all three return the same characters, which is
  asserted before timing.

No existing library runs speculative, Jacobi or lookahead decoding on a plain PyTorch model
(Hugging Face's assisted generation needs its own model classes), so the tables have no "best"
column: the reference is the baseline every method must beat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lib.bench import BenchTable, compare, register
from lib.decoding.drafts import count_draft
from lib.decoding.jacobi import greedy_decode, jacobi_decode
from lib.decoding.lookahead import lookahead_decode
from lib.decoding.speculative import SpecStats, speculative_generate
from lib.zoo import load, zoo_data

__all__ = ["MIN_RUN_TIME", "N_NEW", "SPECULATIVE", "decoding_benchmark", "greedy_table", "prompts", "sampling_table"]

N_NEW = 96
MIN_RUN_TIME = 1.0
"""Seconds each provider is timed for (repeated calls, median reported)."""
SPECULATIVE = {"char-ngram": 6, "char-draft": 2}
"""Draft → γ: the best γ of each draft in section 07.2's measurements."""


def prompts() -> list[torch.Tensor]:
    """Four 32-character prompts from the pydoc validation split."""
    val_ids = torch.as_tensor(zoo_data("pydoc").val_ids)
    return [val_ids[start:start + 32] for start in (1_000, 12_000, 24_000, 36_000)]


def _drafts() -> dict[str, object]:
    return {"char-ngram": count_draft(load("char-ngram")[0]), "char-draft": load("char-draft")[0]}


def _speculative(target: torch.nn.Module, draft: object, gamma: int, stats: SpecStats | None = None) -> Callable[[], None]:
    def run() -> None:
        for seed, prompt in enumerate(prompts()):
            speculative_generate(target, draft, prompt, gamma=gamma, max_new=N_NEW,
                                 generator=torch.Generator().manual_seed(seed), stats=stats)
    return run


def sampling_table(target: torch.nn.Module) -> BenchTable:
    """Autoregressive vs speculative sampling; prints target calls per character for each draft."""
    ps = prompts()
    providers: dict[str, Callable[[], None]] = {
        "autoregressive": lambda: [target.generate(p, N_NEW, seed=seed) for seed, p in enumerate(ps)]
    }
    calls = {}
    for name, draft in _drafts().items():
        gamma, stats = SPECULATIVE[name], SpecStats()
        _speculative(target, draft, gamma, stats)()                     # one logged run (also a warm-up)
        calls[name] = stats.target_calls / (N_NEW * len(ps))
        providers[f"speculative, {name} γ={gamma}"] = _speculative(target, draft, gamma)
    table = compare(f"sample {N_NEW} characters (T = 1)", providers, shape=f"{len(ps)} prompts × 32 + {N_NEW}",
                    dtype="float32", reference="autoregressive", device="cpu", min_run_time=MIN_RUN_TIME)
    print("target calls per character: autoregressive 1.000; "
          + "; ".join(f"{name} {value:.3f}" for name, value in calls.items()))
    return table


def greedy_table(target: torch.nn.Module) -> BenchTable:
    """Greedy with the KV cache vs Jacobi (b = 8) vs lookahead (W = 5, N = 4, G = 5), same output asserted."""
    ps = prompts()
    methods = {
        "greedy (cached)": lambda p: greedy_decode(target, p, N_NEW),
        "jacobi b=8": lambda p: jacobi_decode(target, p, N_NEW, 8),
        "lookahead W=5 N=4 G=5": lambda p: lookahead_decode(target, p, N_NEW, 5, 4, 5),
    }
    for name, method in methods.items():
        for p in ps:
            if not torch.equal(method(p), methods["greedy (cached)"](p)):
                raise AssertionError(f"{name} differs from greedy decoding: the benchmark would time a bug")
    providers = {name: (lambda m=method: [m(p) for p in ps]) for name, method in methods.items()}
    return compare(f"greedy {N_NEW} characters", providers, shape=f"{len(ps)} prompts × 32 + {N_NEW}",
                   dtype="float32", reference="greedy (cached)", device="cpu", min_run_time=MIN_RUN_TIME)


@register("decoding")
@torch.inference_mode()
def decoding_benchmark(device: str) -> list[BenchTable]:
    """``make bench``: chapter 07's decoders on the CPU (the character models are CPU workbench models)."""
    if device != "cpu":
        return []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        target = load("char-target")[0].eval()
        return [sampling_table(target), greedy_table(target)]
    finally:
        torch.set_num_threads(threads)
