"""Test session set-up: the CPU is the reference machine (see CONVENTIONS.md §5 and §8)."""

import os

# Must precede any import of triton: kernels run under Triton's CPU interpreter when no GPU exists.
os.environ.setdefault("MPLBACKEND", "Agg")
# Two pytest workers share two cores: OpenMP threads must sleep, not spin, while they wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import lib.device  # noqa: E402

lib.device.configure_triton()

import torch  # noqa: E402

torch.set_num_threads(2)
