"""Every kernel compiles for an H100/H200 (sm_90) and spills no registers, checked without a GPU.

The interpreter cannot see either: it never lowers a kernel to machine code. The builds are the
ones the launchers make — their largest tile, their warps, each dtype they store — compiled in a
subprocess with the interpreter off (``lib.gpu_compile``).
"""

import inspect

import pytest
import triton

import kernels.online_softmax as streaming
import kernels.softmax as fused
from lib.gpu_compile import KernelBuild, compile_in_subprocess

pytestmark = pytest.mark.kernel

ARCH = 90
DTYPES = ["fp32", "fp16", "bf16"]


def default_of(launcher, argument: str) -> int:
    """The default a launcher gives ``argument`` (a block size, a split count)."""
    return inspect.signature(launcher).parameters[argument].default


def one_block(kernel: str, dtype: str, block: int) -> KernelBuild:
    """A kernel of ``kernels.softmax`` holding a ``block``-wide row, with the warps its launcher picks."""
    return KernelBuild(f"kernels.softmax:{kernel}", dtype, {"BLOCK": block}, fused.num_warps_for(block))


def launcher_builds(dtype: str) -> list[KernelBuild]:
    """The kernels as their launchers compile them: the fused ones at the widest row they accept,
    the streaming ones at their default block and split count."""
    block = default_of(streaming.online_softmax_forward, "block")
    splits = triton.next_power_of_2(default_of(streaming.online_softmax_split, "splits"))
    warps = fused.num_warps_for(block)
    scratch = {"m_ptr": "fp32", "l_ptr": "fp32"}  # the split kernels' per-slice states
    return [
        one_block("softmax_forward_kernel", dtype, fused.MAX_FUSED_COLS),
        one_block("softmax_backward_kernel", dtype, fused.MAX_FUSED_COLS),
        KernelBuild("kernels.online_softmax:online_softmax_kernel", dtype, {"BLOCK": block}, warps),
        KernelBuild("kernels.online_softmax:slice_states_kernel", dtype, {"BLOCK": block}, warps, scratch),
        KernelBuild("kernels.online_softmax:merge_normalize_kernel", dtype, {"SPLITS": splits, "BLOCK": block},
                    warps, scratch),
    ]


BUILDS = [build for dtype in DTYPES for build in launcher_builds(dtype)]
# A row twice as wide as MAX_FUSED_COLS spills (with strides unknown at compile time, as in every
# build here): the reason for that limit, and proof that the check below can fail.
TOO_WIDE = one_block("softmax_forward_kernel", "fp32", 2 * fused.MAX_FUSED_COLS)


@pytest.fixture(scope="module")
def resources():
    """Registers and spills of every build by label, from one subprocess (one import of torch and triton)."""
    builds = BUILDS + [TOO_WIDE]
    return {build.label(): used for build, used in zip(builds, compile_in_subprocess(builds, arch=ARCH))}


@pytest.mark.parametrize("build", BUILDS, ids=KernelBuild.label)
def test_kernel_compiles_for_sm90_without_spills(build, resources):
    used = resources[build.label()]
    assert used.local_bytes == 0, (
        f"{build.label()}: spills {used.local_bytes} bytes per thread to local memory on sm_{ARCH} "
        f"({used.registers} registers)"
    )


def test_a_row_wider_than_max_fused_cols_spills(resources):
    assert resources[TOO_WIDE.label()].local_bytes > 0
