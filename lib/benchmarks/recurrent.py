"""Benchmark of section 07.6 (``make bench``, CPU): greedy decoding of the zoo's SSM, AR vs chain vs tree.

Four 32-character prompts of the pydoc validation split, 96 new characters each, one torch thread
(batch 1: a second thread only adds synchronisation to each small call). Providers: autoregressive
greedy decoding with the recurrent state (the reference), chain speculative decoding (γ = 4) and
tree speculative decoding (static 3-1-1-1 tree), both drafted by the 5-gram count model and verified
by one tree call of ``char-ssd`` per round. All three return the same characters (asserted first).
"""

from __future__ import annotations

import torch

from lib.bench import BenchTable, compare, register
from lib.benchmarks.decoding import N_NEW, MIN_RUN_TIME, prompts
from lib.recurrent.tree_decoding import NGramProposer, greedy_generate, tree_speculative_generate
from lib.zoo import load

__all__ = ["ssm_tree_benchmark"]

SHAPES = {"chain γ=4": (1, 1, 1, 1), "tree 3-1-1-1": (3, 1, 1, 1)}


@register("ssm_tree")
@torch.inference_mode()
def ssm_tree_benchmark(device: str) -> list[BenchTable]:
    """AR greedy vs chain vs tree speculative decoding of ``char-ssd`` on the CPU."""
    if device != "cpu":
        return []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, proposer, ps = load("char-ssd")[0], NGramProposer(load("char-ngram")[0]), prompts()
        methods = {"AR greedy (step)": lambda p: greedy_generate(model, p, N_NEW)}
        for name, branching in SHAPES.items():
            methods[name] = lambda p, b=branching: tree_speculative_generate(model, proposer, p, branching=b,
                                                                             max_new=N_NEW)
        for name, method in methods.items():
            if any(not torch.equal(method(p), methods["AR greedy (step)"](p)) for p in ps):
                raise AssertionError(f"{name} differs from greedy decoding: the benchmark would time a bug")
        providers = {name: (lambda m=method: [m(p) for p in ps]) for name, method in methods.items()}
        return [compare(f"char-ssd greedy {N_NEW} characters", providers, shape=f"{len(ps)} prompts × 32 + {N_NEW}",
                        dtype="float32", reference="AR greedy (step)", device="cpu", min_run_time=MIN_RUN_TIME)]
    finally:
        torch.set_num_threads(threads)
