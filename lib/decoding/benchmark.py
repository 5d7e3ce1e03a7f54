"""Timing speculative sampling against plain autoregressive sampling, with everything that explains it.

:func:`benchmark_speculative` samples ``n_new`` tokens after each prompt, at temperature 1, with
the target alone (``target.generate``, one call per token) and with speculative sampling for each
γ, and reports per γ:

* ms per token (median over ``repeats``, each repeat summed over the prompts) and the speed-up;
* target calls per token (deterministic: the seeds are fixed, so every repeat draws the same text);
* α̂ (the mean logged β), the histogram of accepted drafts per full round, and
* the measured c = seconds per draft step / seconds per target call,

so the 07.1 prediction S(α, γ, c) = (1 − α^{γ+1}) / ((1 − α)(γc + 1)) can be laid beside the
measured speed-up. CPU settings: 2 threads, ``torch.inference_mode``, one warm-up run first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lib.decoding.reference import speedup
from lib.decoding.speculative import SpecStats, speculative_generate
from lib.validation import check_positive_int

__all__ = ["SpecBenchmark", "benchmark_speculative"]


@dataclass
class SpecBenchmark:
    """What :func:`benchmark_speculative` measured; dicts are keyed by γ."""

    baseline_ms: float                                     # ms per token, autoregressive
    ms: dict[int, float] = field(default_factory=dict)    # ms per token, speculative
    calls: dict[int, float] = field(default_factory=dict)  # target calls per token (prompt pass excluded)
    alpha: dict[int, float] = field(default_factory=dict)  # α̂, mean β over drafted positions
    cost: dict[int, float] = field(default_factory=dict)   # measured c
    accepted: dict[int, np.ndarray] = field(default_factory=dict)  # (γ+1,) counts of n over full rounds

    def speedup(self, gamma: int) -> float:
        """Measured speed-up over autoregressive sampling at γ."""
        return self.baseline_ms / self.ms[gamma]

    def predicted(self, gamma: int) -> float:
        """S(α̂, γ, c) with this run's α̂ and measured c."""
        return float(speedup(self.alpha[gamma], gamma, self.cost[gamma]))

    def best_gamma(self) -> int:
        """The γ with the largest measured speed-up."""
        return max(self.ms, key=self.speedup)


def _check_prompts(prompts: Any) -> None:
    if not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(f"prompts: expected a non-empty list of 1-d token tensors, got {type(prompts).__name__}")
    for prompt in prompts:
        if not isinstance(prompt, torch.Tensor) or prompt.ndim != 1:
            raise ValueError(f"prompts: expected 1-d token tensors, got {getattr(prompt, 'shape', type(prompt).__name__)}")


def _seconds(run: Any) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _baseline_ms(target: Any, prompts: Sequence[torch.Tensor], n_new: int, repeats: int) -> float:
    """Median over repeats of ms per token for ``target.generate`` at T = 1 (seed = prompt index)."""
    def run() -> None:
        for seed, prompt in enumerate(prompts):
            target.generate(prompt, n_new, seed=seed)

    return float(np.median([_seconds(run) for _ in range(repeats)])) * 1e3 / (n_new * len(prompts))


def _speculative_run(target: Any, draft: Any, prompts: Sequence[torch.Tensor], gamma: int, n_new: int) -> SpecStats:
    """One pass over the prompts at γ (generator seed = prompt index), logged into one SpecStats."""
    stats = SpecStats()
    for seed, prompt in enumerate(prompts):
        speculative_generate(target, draft, prompt, gamma=gamma, max_new=n_new,
                             generator=torch.Generator().manual_seed(seed), stats=stats)
    return stats


@torch.inference_mode()
def benchmark_speculative(
    target: Any, draft: Any, prompts: Sequence[torch.Tensor], gammas: Sequence[int], n_new: int, repeats: int = 3
) -> SpecBenchmark:
    """Time autoregressive vs speculative sampling of ``n_new`` tokens after each prompt, for each γ.

    ``target`` follows the Decoder protocol and has ``generate`` (the baseline); ``draft`` follows
    the protocol. Each γ runs ``repeats`` times after a warm-up; the logged statistics (calls, α̂,
    c, acceptance histogram) come from the first timed repeat.
    """
    _check_prompts(prompts)
    check_positive_int("n_new", n_new)
    check_positive_int("repeats", repeats)
    for gamma in gammas:
        check_positive_int("gammas", gamma)
    torch.set_num_threads(2)
    _speculative_run(target, draft, prompts[:1], max(gammas), min(n_new, 16))  # warm-up
    result = SpecBenchmark(baseline_ms=_baseline_ms(target, prompts, n_new, repeats))
    tokens = n_new * len(prompts)
    for gamma in gammas:
        times, logs = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            logs.append(_speculative_run(target, draft, prompts, gamma, n_new))
            times.append(time.perf_counter() - start)
        stats = logs[0]
        result.ms[gamma] = float(np.median(times)) * 1e3 / tokens
        result.calls[gamma] = stats.target_calls / tokens
        result.alpha[gamma] = stats.alpha()
        result.cost[gamma] = stats.cost_ratio()
        full = [n for g, n in zip(stats.gammas, stats.accepted) if g == gamma]
        result.accepted[gamma] = np.bincount(full, minlength=gamma + 1)
    return result
