"""Compile Triton kernels for a GPU on a machine without one, and read what the compiler allotted.

The interpreter runs a kernel's Python semantics and never lowers it, so it cannot see what goes
wrong on the way to machine code: a construct the compiler rejects, or a tile so large that the
registers overflow and values spill to local memory (slow, and a sign the tile size is wrong).
Triton compiles for any target without a device present::

    triton.compile(ASTSource(fn=kernel, signature=..., constexprs=...), target=GPUTarget("cuda", 90, 32))

and the ``cuobjdump`` shipped with Triton reads the registers and the local memory per thread of
the resulting cubin. ptxas puts spilled registers in the stack frame, which lives in local memory;
Triton's own ``compiled.n_spills`` is that local memory / 4, but it is only filled in when a kernel
is loaded onto a device.

Compiling needs ``triton`` imported with the interpreter off, which the test session cannot have
on a CPU, so :func:`compile_in_subprocess` runs this module in a fresh Python with
``TRITON_INTERPRET=0``: ``python -m lib.gpu_compile --arch 90`` reads a JSON list of
:class:`KernelBuild` on stdin and writes a JSON list of :class:`Resources` on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "KernelBuild",
    "Resources",
    "compile_cubin",
    "compile_in_subprocess",
    "cubin_resources",
    "signature_of",
]


@dataclass(frozen=True)
class KernelBuild:
    """One compilation of one kernel: what ``kernel[grid](...)`` would compile at launch.

    kernel: ``"module:attribute"`` of a ``@triton.jit`` function, e.g. ``"kernels.softmax:softmax_forward_kernel"``.
    dtype: Triton's name of the element type behind every ``*_ptr`` argument ("fp32", "fp16", "bf16").
    constexprs: the value of every ``tl.constexpr`` parameter.
    num_warps: warps per program, as the launcher passes them.
    pointer_dtypes: pointers whose element type is not ``dtype`` (e.g. float32 scratch), by name.
    scalar_types: scalar arguments that are not ``i32`` (e.g. ``{"qk_scale": "fp32"}``), by name.
    Every other argument is an ``i32`` scalar unknown at compile time: the build that serves any
    strides (at launch Triton would also specialise a stride of 1 into a constant).
    """

    kernel: str
    dtype: str
    constexprs: dict[str, int | float]
    num_warps: int
    pointer_dtypes: dict[str, str] = field(default_factory=dict)
    scalar_types: dict[str, str] = field(default_factory=dict)

    def label(self) -> str:
        """Short name for messages and test ids: the kernel, its dtype and its constexprs."""
        values = ",".join(f"{k}={v}" for k, v in self.constexprs.items())
        return f"{self.kernel.split(':')[1]}[{self.dtype},{values},warps={self.num_warps}]"


@dataclass(frozen=True)
class Resources:
    """What ptxas allotted one thread of a compiled kernel."""

    registers: int
    local_bytes: int  # stack frame + .local: registers spilled to memory (Triton's n_spills × 4)


def signature_of(kernel: Any, build: KernelBuild) -> dict[str, str]:
    """Triton's signature for ``kernel``: ``*dtype`` per pointer, ``constexpr``, or the scalar's type (``i32``)."""

    def type_of(param: Any) -> str:
        if param.is_constexpr:
            return "constexpr"
        if param.name.endswith("_ptr"):
            return "*" + build.pointer_dtypes.get(param.name, build.dtype)
        return build.scalar_types.get(param.name, "i32")

    return {param.name: type_of(param) for param in kernel.params}


def compile_cubin(build: KernelBuild, arch: int) -> bytes:
    """Compile ``build`` for ``sm_<arch>`` and return the cubin. Needs the interpreter off."""
    import triton
    from triton.backends.compiler import GPUTarget

    if triton.knobs.runtime.interpret:
        raise RuntimeError("compile_cubin: TRITON_INTERPRET=1 is on, so kernels are not compilable here")
    module_name, attribute = build.kernel.split(":")
    kernel = getattr(importlib.import_module(module_name), attribute)
    source = triton.compiler.ASTSource(fn=kernel, signature=signature_of(kernel, build), constexprs=build.constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": build.num_warps})
    return compiled.asm["cubin"]


def cubin_resources(cubin: bytes) -> Resources:
    """Registers and local-memory bytes (spills) per thread of the one kernel in ``cubin``."""
    import triton

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        report = subprocess.run(
            [triton.knobs.nvidia.cuobjdump.path, "--dump-resource-usage", str(path)],
            capture_output=True, text=True, check=True,
        ).stdout
    usage = dict(re.findall(r"\b(REG|STACK|LOCAL):(\d+)", report))
    return Resources(registers=int(usage["REG"]), local_bytes=int(usage["STACK"]) + int(usage["LOCAL"]))


def compile_in_subprocess(builds: list[KernelBuild], arch: int = 90, timeout_s: float = 300.0) -> list[Resources]:
    """Compile every build for ``sm_<arch>`` in a fresh Python with the interpreter off; one result per build."""
    request = json.dumps([dataclasses.asdict(build) for build in builds])
    result = subprocess.run(
        [sys.executable, "-m", "lib.gpu_compile", "--arch", str(arch)],
        input=request, capture_output=True, text=True, timeout=timeout_s,
        env={**os.environ, "TRITON_INTERPRET": "0"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"compiling for sm_{arch} failed:\n{result.stderr[-4000:]}")
    return [Resources(**resources) for resources in json.loads(result.stdout)]


def main() -> None:
    """Read a JSON list of builds on stdin; write their resources as a JSON list on stdout."""
    parser = argparse.ArgumentParser(description="Compile Triton kernels for a GPU; report registers and spills.")
    parser.add_argument("--arch", type=int, default=90, help="compute capability as an int, e.g. 90 for H100/H200")
    arch = parser.parse_args().arch
    builds = [KernelBuild(**build) for build in json.load(sys.stdin)]
    json.dump([dataclasses.asdict(cubin_resources(compile_cubin(build, arch))) for build in builds], sys.stdout)


if __name__ == "__main__":
    main()
