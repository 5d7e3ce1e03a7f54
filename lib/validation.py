"""Argument checks every section shares: each raises a one-line error naming the argument.

The message reads ``<name>: expected <what>, got <what came>``, so a reader who passes the wrong
thing learns which argument and why without reading a traceback. ``TypeError`` is for the wrong
kind of object or dtype, ``ValueError`` for the wrong shape or value. The checks accept NumPy
arrays wherever they only look at ``.shape`` and ``.ndim``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "check_choice",
    "check_dim",
    "check_dtype",
    "check_floating_tensor",
    "check_int_in_range",
    "check_ndim",
    "check_positive_int",
    "check_same_device",
    "check_same_shape",
    "check_sampling",
    "check_seed",
    "check_tensor",
]


def check_tensor(name: str, x: Any) -> None:
    """Raise ``TypeError`` unless ``x`` is a ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")


def check_dim(dim: Any, ndim: int) -> None:
    """Raise ``ValueError`` unless ``dim`` is an int axis of an ``ndim``-d tensor (negative counts from the end)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise ValueError(f"dim: expected an int in [{-ndim}, {ndim}) for a {ndim}-d tensor, got {dim!r}")


def check_floating_tensor(name: str, x: Any, dim: int) -> None:
    """Raise unless ``x`` is a floating-point tensor with a valid, non-empty axis ``dim``."""
    check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name}: expected at least one dimension, got a 0-d tensor")
    check_dim(dim, x.ndim)
    if x.shape[dim] == 0:
        raise ValueError(f"{name}: expected a non-empty dimension {dim}, got shape {tuple(x.shape)}")


def check_ndim(name: str, x: Any, layout: str) -> None:
    """Raise ``ValueError`` unless ``x`` has one axis per comma-separated name of ``layout``, e.g. "rows, n"."""
    ndim = len(layout.split(","))
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array ({layout}), got shape {tuple(x.shape)}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_dtype(name: str, x: torch.Tensor, allowed: Iterable[torch.dtype]) -> None:
    """Raise ``TypeError`` unless ``x.dtype`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if x.dtype not in allowed:
        expected = ", ".join(_dtype_name(d) for d in allowed)
        raise TypeError(f"{name}: expected one of {expected}, got {x.dtype}")


def check_same_shape(name: str, x: Any, like_name: str, like: Any) -> None:
    """Raise ``ValueError`` unless ``x`` has the shape of ``like`` (called ``like_name`` in the message)."""
    if tuple(x.shape) != tuple(like.shape):
        raise ValueError(
            f"{name}: expected shape {tuple(like.shape)} (the shape of {like_name}), got {tuple(x.shape)}"
        )


def check_same_device(name: str, x: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` lives on the device of ``like`` (called ``like_name`` in the message)."""
    if x.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device} (like {like_name}), got one on {x.device}")


def check_positive_int(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an int ≥ 1 (a block size, a split count), not a bool."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def check_choice(name: str, value: Any, known: Iterable[str]) -> None:
    """Raise unless ``value`` is one of the names in ``known`` (a corpus, a task); the message lists them."""
    known = sorted(known)
    if value not in known:
        raise ValueError(f"{name}: expected one of {', '.join(known)}, got {value!r}")


def check_int_in_range(name: str, value: Any, low: int, high: int) -> None:
    """Raise unless ``value`` is an int (not a bool) with ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")


def check_seed(seed: Any) -> None:
    """Raise unless ``seed`` is a non-negative int, as :func:`numpy.random.default_rng` takes it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")


def check_sampling(temperature: Any, top_k: Any, top_p: Any) -> None:
    """Raise a one-line ``ValueError`` naming ``temperature`` (≥ 0), ``top_k`` (int ≥ 1) or ``top_p`` ((0, 1])."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature: expected a number ≥ 0 (0 is greedy), got {temperature!r}")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p: expected a number in (0, 1], got {top_p!r}")
