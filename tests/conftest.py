"""Test session set-up: the CPU is the reference machine (see CONVENTIONS.md §5 and §8).

Kernel tests (marker ``kernel``) put their inputs on :func:`lib.device.kernel_device`: the CPU,
where Triton's interpreter runs the kernels, or a GPU, where they launch for real
(``make bench-gpu`` runs ``pytest -m kernel`` there). The fixtures below are what they share.
"""

import os

# Must precede any import of triton: kernels run under Triton's CPU interpreter when no GPU exists.
os.environ.setdefault("MPLBACKEND", "Agg")
# Two pytest workers share two cores: OpenMP threads must sleep, not spin, while they wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import lib.device  # noqa: E402

lib.device.configure_triton()

import pytest  # noqa: E402
import torch  # noqa: E402

from lib.testing import BF16_UNDER_INTERPRETER  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def kernel_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make lib's dispatch take the kernel route for tensors on the kernel device.

    On a GPU, CUDA tensors take it anyway. On the CPU the dispatch rule is patched so that CPU
    tensors go down the CUDA route, and the interpreter runs lib's kernel glue.
    """
    if lib.device.kernel_device().type == "cpu":
        monkeypatch.setattr("lib.softmax.use_kernel", lambda *tensors: True)


@pytest.fixture(
    params=[
        torch.float16,
        pytest.param(
            torch.bfloat16,
            marks=pytest.mark.skipif(lib.device.interpreting(), reason=BF16_UNDER_INTERPRETER),
        ),
    ],
    ids=["float16", "bfloat16"],
)
def half_dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """The reduced dtypes kernels load and store (their math is float32); bf16 runs on a GPU only."""
    return request.param

# Submissions made for the grader's tests are graded by tests/test_grading.py, not collected by nbval.
collect_ignore = ["fixtures"]
