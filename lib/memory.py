"""Peak tensor memory of a PyTorch call, on any device, without a GPU's allocator statistics.

CPU PyTorch keeps no allocation counters, and ``tracemalloc`` does not see tensor storage. So
:func:`peak_tensor_bytes` watches every operator through a ``TorchDispatchMode``: each new storage an
operator returns adds its size to a running total, and a finalizer subtracts it when the storage is
freed. The maximum of that total is the peak memory of the tensors the call creates — what the
N×N score matrix of naive attention costs, and what FlashAttention saves. Inputs that existed
before the call are not counted; views share their base's storage and count once.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["PeakMemory", "peak_tensor_bytes"]


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class PeakMemory(TorchDispatchMode):
    """Context manager: ``peak`` is the most bytes of storage created inside it and alive at once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self._tracked.discard(key)
        self.live -= nbytes

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or key in self._tracked:
            return
        self._tracked.add(key)
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105 (the dispatch protocol)
        kwargs = kwargs or {}
        inputs = {_storage_key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor) and _storage_key(leaf) not in inputs:   # views, in-place: not new
                self._track(leaf)
        return out


def peak_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Run ``fn()`` and return the peak bytes of tensor storage it had alive at once (its result included)."""
    if not callable(fn):
        raise TypeError(f"fn: expected a zero-argument callable, got {type(fn).__name__}")
    with PeakMemory() as meter:
        result = fn()
    del result
    return meter.peak
