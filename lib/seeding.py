"""One call that makes a notebook, a test or a benchmark repeatable."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything"]


def seed_everything(seed: int = 0, threads: int | None = 2) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) and return a fresh NumPy ``Generator``.

    ``threads`` pins PyTorch's intra-op thread count (the book is measured on 2 cores), so that
    reductions are summed in the same order on every run; pass ``None`` to leave it alone.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed_everything(seed): expected a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    return np.random.default_rng(seed)
