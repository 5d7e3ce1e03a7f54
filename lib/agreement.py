"""Agreement is asserted, never eyeballed.

Two rules from ``CONVENTIONS.md`` §4, each printing a one-line verdict that a notebook marks with
``# NBVAL_CHECK_OUTPUT``:

* :func:`agree` — elementwise ``|actual - expected| <= atol + rtol * |expected|`` (the rule of
  ``torch.allclose``), with a stated reason for the tolerance. Used for exact rewrites checked
  against a float64 reference (float32: ``atol 1e-5, rtol 1e-4``).
* :func:`agree_flash_rule` — the FlashAttention rule for reduced precision:
  ``err(optimized, ref64) <= factor * err(baseline, ref64) + floor``, where the baseline is plain
  PyTorch in the same dtype and ``floor`` is a couple of units in the last place at the reference's
  scale. The optimized code may be as wrong as the obvious implementation, but not much more.

Both compare in float64, accept NumPy arrays or torch tensors, check shapes first, and fail when
the optimized result holds NaN or inf where the reference is finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["Verdict", "agree", "agree_flash_rule", "max_abs_error", "rel_rms_error", "rounding_floor"]


def _to_f64(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    if isinstance(x, np.ndarray):
        return x.astype(np.float64, copy=False)
    raise TypeError(f"{name}: expected a numpy.ndarray or torch.Tensor, got {type(x).__name__}")


def _dtype_name(x: ArrayLike) -> str:
    return str(x.dtype).replace("torch.", "")


def max_abs_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| over the entries where both are finite (0.0 when there are none)."""
    both = np.isfinite(actual) & np.isfinite(expected)
    return float(np.max(np.abs(actual[both] - expected[both]), initial=0.0))


def rel_rms_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Relative RMS error ``||actual - expected|| / ||expected||`` over finite entries."""
    both = np.isfinite(actual) & np.isfinite(expected)
    denom = np.linalg.norm(expected[both])
    num = np.linalg.norm(actual[both] - expected[both])
    return float(num / denom) if denom > 0 else float(num)


def rounding_floor(dtype: torch.dtype | np.dtype, scale: float, ulps: float = 2.0) -> float:
    """``ulps`` units in the last place of ``dtype`` at magnitude ``scale``: the error no rewrite avoids."""
    eps = torch.finfo(dtype).eps if isinstance(dtype, torch.dtype) else float(np.finfo(dtype).eps)
    return ulps * eps * max(float(scale), 1.0)


def _check_shapes_and_finiteness(name: str, actual: np.ndarray, expected: np.ndarray) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} differs from the reference's {expected.shape}")
    bad = ~np.isfinite(actual) & np.isfinite(expected)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: {int(bad.sum())} NaN/inf value(s) where the reference is finite (first at index {where})"
        )
    mismatch = ~np.isfinite(expected) & (np.nan_to_num(actual, nan=0.5) != np.nan_to_num(expected, nan=0.5))
    if mismatch.any():
        where = tuple(int(i) for i in np.argwhere(mismatch)[0])
        raise AssertionError(f"{name}: the reference's NaN/inf pattern is not reproduced (first at index {where})")


@dataclass(frozen=True)
class Verdict:
    """What one agreement check measured and allowed; ``line()`` is the notebook's verdict."""

    name: str
    max_abs: float
    rel_rms: float
    allowed: str
    reason: str

    def line(self) -> str:
        return f"✓ {self.name}: max abs {self.max_abs:.0e}, rel RMS {self.rel_rms:.0e} ≤ {self.allowed} ({self.reason})"


def agree(
    name: str,
    actual: ArrayLike,
    expected: ArrayLike,
    *,
    atol: float,
    rtol: float,
    reason: str,
    quiet: bool = False,
) -> Verdict:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise and print the verdict.

    ``reason`` says why the tolerance is what it is (e.g. "exact rewrite, fp32 accumulation").
    Raises ``AssertionError`` naming the worst element; ``ValueError`` for a meaningless tolerance.
    """
    if not reason or not reason.strip():
        raise ValueError("agree(reason): every tolerance needs a stated reason")
    if not (0 <= atol < 1) or not (0 <= rtol < 1):
        raise ValueError(f"agree(atol, rtol): expected 0 <= atol, rtol < 1, got atol={atol}, rtol={rtol}")
    a, e = _to_f64(actual, "actual"), _to_f64(expected, "expected")
    _check_shapes_and_finiteness(name, a, e)
    both = np.isfinite(a) & np.isfinite(e)
    excess = np.full(a.shape, -np.inf)  # how far each entry lies outside its allowance
    excess[both] = np.abs(a[both] - e[both]) - (atol + rtol * np.abs(e[both]))
    if excess.size and excess.max() > 0:
        i = np.unravel_index(int(np.argmax(excess)), excess.shape)
        raise AssertionError(
            f"{name}: disagrees at index {tuple(int(k) for k in i)}: got {a[i]:.6g}, expected {e[i]:.6g} "
            f"(|diff| {abs(a[i] - e[i]):.2e} > atol {atol:.0e} + rtol {rtol:.0e}·|expected|; "
            f"{int((excess > 0).sum())} of {excess.size} entries outside)"
        )
    verdict = Verdict(name, max_abs_error(a, e), rel_rms_error(a, e), f"atol {atol:.0e} + rtol {rtol:.0e}", reason)
    if not quiet:
        print(verdict.line())
    return verdict


def agree_flash_rule(
    name: str,
    optimized: torch.Tensor,
    baseline: torch.Tensor,
    reference: ArrayLike,
    *,
    factor: float = 2.0,
    floor: float | None = None,
    quiet: bool = False,
) -> Verdict:
    """Assert ``err(optimized) <= factor * err(baseline) + floor``, errors measured against float64.

    ``optimized`` and ``baseline`` must share a reduced dtype (fp16, bf16, fp32); ``baseline`` is
    the plain PyTorch computation in that dtype. ``floor`` defaults to two ulps of that dtype at the
    reference's largest magnitude, so a baseline that happens to be exact does not demand exactness.
    """
    if not isinstance(optimized, torch.Tensor) or not isinstance(baseline, torch.Tensor):
        raise TypeError("agree_flash_rule(optimized, baseline): expected torch tensors")
    if optimized.dtype != baseline.dtype:
        raise ValueError(
            f"agree_flash_rule: optimized is {_dtype_name(optimized)} but baseline is {_dtype_name(baseline)}; "
            "the rule compares two computations in the same dtype"
        )
    o, b, r = _to_f64(optimized, "optimized"), _to_f64(baseline, "baseline"), _to_f64(reference, "reference")
    _check_shapes_and_finiteness(name, o, r)
    if floor is None:
        finite = r[np.isfinite(r)]
        floor = rounding_floor(optimized.dtype, float(np.abs(finite).max(initial=0.0)))
    err_o, err_b = max_abs_error(o, r), max_abs_error(b, r)
    bound = factor * err_b + floor
    if err_o > bound:
        raise AssertionError(
            f"{name}: error {err_o:.3e} exceeds {factor:g} × baseline error {err_b:.3e} + floor {floor:.1e} "
            f"(= {bound:.3e}) in {_dtype_name(optimized)}"
        )
    verdict = Verdict(
        name,
        err_o,
        rel_rms_error(o, r),
        f"{factor:g} × plain-torch error + floor",
        f"FlashAttention rule, {_dtype_name(optimized)} vs float64",
    )
    if not quiet:
        print(verdict.line())
    return verdict
