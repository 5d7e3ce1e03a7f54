"""Where code runs: CUDA tensors go to Triton kernels, CPU tensors to the PyTorch path.

Triton kernels can still run on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``),
which is how the tests and notebooks check every kernel on a machine without a GPU. The variable
is read when ``triton`` is first imported, so :func:`configure_triton` must run before that;
``import kernels`` calls it for you.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

__all__ = [
    "configure_triton",
    "default_device",
    "interpreting",
    "kernel_device",
    "triton_available",
    "use_kernel",
]


def triton_available() -> bool:
    """True when the ``triton`` package is installed (Linux only)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton kernels run under the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def configure_triton() -> None:
    """Turn on Triton's interpreter when no CUDA device is present and ``TRITON_INTERPRET`` is unset.

    An explicit ``TRITON_INTERPRET`` wins: ``TRITON_INTERPRET=0`` keeps the interpreter off on a
    machine without a GPU, where kernels can then be compiled for a GPU but not run
    (``lib.gpu_compile``). Raises ``RuntimeError`` when ``triton`` was already imported without
    the interpreter on a machine with no GPU: the setting would then be ignored and every launch
    would fail later with a less helpful message.
    """
    if torch.cuda.is_available() or "TRITON_INTERPRET" in os.environ:
        return
    if "triton" in sys.modules:
        raise RuntimeError(
            "triton was imported before TRITON_INTERPRET=1 was set and there is no CUDA device: "
            "import kernels (or call lib.device.configure_triton()) before importing triton"
        )
    os.environ["TRITON_INTERPRET"] = "1"


def default_device() -> torch.device:
    """``cuda`` when a GPU is present, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def kernel_device() -> torch.device:
    """Where kernel tests put their inputs: ``cuda`` when a GPU is present, else ``cpu``.

    On ``cuda`` kernels launch for real; on ``cpu`` Triton's interpreter runs them, so it must be
    on (:func:`configure_triton`, which ``tests/conftest.py`` calls). Raises ``RuntimeError`` on a
    machine with neither, where no kernel could run.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not interpreting():
        raise RuntimeError(
            "no device runs Triton kernels: there is no GPU and TRITON_INTERPRET=1 is not set; "
            "call lib.device.configure_triton() before importing triton"
        )
    return torch.device("cpu")


def use_kernel(*tensors: torch.Tensor) -> bool:
    """Dispatch rule of every ``lib`` function: the Triton kernel for CUDA tensors, PyTorch otherwise.

    Mixed devices are an error, named here rather than deep inside a kernel launch.
    """
    devices = {t.device.type for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"tensors: expected all on one device, got {sorted(devices)}")
    return devices == {"cuda"} and triton_available()
