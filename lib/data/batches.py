"""Next-token batches cut from one long 1-d array of token ids.

Every batch is a pair ``(x, y)`` of ``torch.long`` tensors of shape ``(B, T)`` with ``y`` the same
window shifted one token ahead: ``y[b, t] = ids[start_b + t + 1]`` is the token that follows
``x[b, t] = ids[start_b + t]``. Batches live on the device of ``ids`` when it is a tensor, else on
the CPU.

* :func:`random_batches` — training: endless, windows starting anywhere, reproducible from ``seed``.
* :func:`eval_batches` — evaluation: each non-overlapping window exactly once, in order, so every
  token after the first (up to the last full window) is predicted exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from lib.validation import check_seed
from lib.validation import check_ndim, check_positive_int

__all__ = ["eval_batches", "random_batches"]

Batch = tuple[torch.Tensor, torch.Tensor]


def _token_tensor(ids: Any, seq_len: int) -> torch.Tensor:
    """``ids`` as a 1-d long tensor holding at least one window plus its shifted target (``seq_len + 1`` tokens)."""
    tokens = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids)
    check_ndim("ids", tokens, "n")
    if len(tokens) < seq_len + 1:
        raise ValueError(f"ids: expected at least seq_len + 1 = {seq_len + 1} tokens, got {len(tokens)}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"ids: expected integer token ids, got {tokens.dtype}")
    return tokens.long()


def _windows(tokens: torch.Tensor, starts: torch.Tensor, seq_len: int) -> Batch:
    """Windows ``x[b] = tokens[starts[b] : starts[b] + T]`` and ``y`` one token later; both (B, T)."""
    index = starts[:, None] + torch.arange(seq_len, device=tokens.device)
    return tokens[index], tokens[index + 1]


def random_batches(ids: Any, batch_size: int, seq_len: int, *, seed: int) -> Iterator[Batch]:
    """Endless ``(x, y)`` batches of random windows, the same sequence for the same ``seed``.

    Each start is drawn uniformly from ``0 .. len(ids) - seq_len - 1`` (with replacement, so any
    window may repeat). ``ids``: 1-d integer array, list or tensor. Yields ``x, y`` of shape
    ``(batch_size, seq_len)``, ``torch.long``.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    check_seed(seed)
    tokens = _token_tensor(ids, seq_len)
    return _random_stream(tokens, batch_size, seq_len, np.random.default_rng(seed))


def _random_stream(tokens: torch.Tensor, batch_size: int, seq_len: int, rng: np.random.Generator) -> Iterator[Batch]:
    n_starts = len(tokens) - seq_len
    while True:
        starts = torch.from_numpy(rng.integers(0, n_starts, size=batch_size)).to(tokens.device)
        yield _windows(tokens, starts, seq_len)


def eval_batches(ids: Any, batch_size: int, seq_len: int) -> Iterator[Batch]:
    """Every non-overlapping window once, in order: window ``k`` starts at ``k * seq_len``.

    There are ``(len(ids) - 1) // seq_len`` windows; the tokens after the last full window are not
    used. Batches hold ``batch_size`` windows except the last, which holds what is left.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    tokens = _token_tensor(ids, seq_len)
    n_windows = (len(tokens) - 1) // seq_len
    starts = torch.arange(n_windows, device=tokens.device) * seq_len
    return (_windows(tokens, chunk, seq_len) for chunk in starts.split(batch_size))
