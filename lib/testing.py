"""Helpers for the tests and agreement cells of every section.

Kernel checks follow one pattern (CONVENTIONS §4): inputs on :func:`lib.device.kernel_device`, the
output allocated NaN-filled with :func:`nan_like` and passed as the kernel's ``out``, the float64
reference computed from :func:`numpy64` copies of the inputs.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["BF16_UNDER_INTERPRETER", "nan_like", "numpy64"]

BF16_UNDER_INTERPRETER = "the Triton interpreter computes bf16 wrongly (CONVENTIONS §5)"
"""Skip reason of every bf16 kernel test on the CPU: bf16 kernels are tested on a GPU only."""


def nan_like(x: torch.Tensor) -> torch.Tensor:
    """A NaN-filled tensor shaped like ``x`` (same dtype and device): pass it as a kernel's ``out``
    in a check, and any element the kernel never writes shows up as NaN where the reference is finite."""
    return torch.full(x.shape, float("nan"), dtype=x.dtype, device=x.device)


def numpy64(x: torch.Tensor) -> np.ndarray:
    """``x`` as a float64 NumPy array, from any device and any dtype (NumPy has no bfloat16).

    Every value of a reduced-precision tensor is exact in float64, so a reference computed from
    this array sees exactly the inputs the kernel saw.
    """
    return x.detach().cpu().double().numpy()
