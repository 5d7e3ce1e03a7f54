"""Measured, not assumed: time several implementations side by side in one process.

``compare`` runs every provider on the same inputs, one after the other, and reports the median
time, the 20th and 80th percentiles, and two speed-up ratios: against the reference (usually the
NumPy code of the section) and against the best existing implementation (``torch.softmax``,
SDPA, ...). Ratios > 1 mean faster.

* CPU: ``torch.utils.benchmark.Timer`` with 2 threads after a warm-up call; the percentiles are
  over its timed blocks.
* CUDA: ``triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])`` (its default would be the mean).

Never time a Triton kernel under the CPU interpreter: that measures Python, not the kernel.

Benchmarks that ``make bench`` / ``make bench-gpu`` run are registered with :func:`register` in the
modules of :mod:`lib.benchmarks`; ``python -m lib.benchmarks --device cpu --out docs/bench/cpu.csv``
runs them all and writes CSV rows (op, provider, shape, dtype, median, p20, p80, device, versions).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import pkgutil
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["BenchTable", "Timing", "compare", "register", "run_registered", "machine", "versions"]

CSV_FIELDS = (
    "op", "provider", "shape", "dtype", "median_ms", "p20_ms", "p80_ms",
    "speedup_vs_reference", "speedup_vs_best", "gbps", "tflops", "pct_of_peak", "device", "versions",
)


@dataclass(frozen=True)
class Timing:
    """One provider's measured time, in milliseconds."""

    provider: str
    median_ms: float
    p20_ms: float
    p80_ms: float


def versions() -> str:
    """The software a timing depends on, as one string for the CSV."""
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"numpy {np.__version__}"]
    if "triton" in sys.modules or importlib.util.find_spec("triton"):
        import triton

        parts.append(f"triton {triton.__version__}")
    return "; ".join(parts)


def machine(device: str) -> str:
    """What ran the benchmark: the GPU's name, or the CPU model and the thread count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


def _time_cpu(fn: Callable[[], Any], min_run_time: float) -> tuple[float, float, float]:
    from torch.utils.benchmark import Timer

    fn()  # warm-up: first-call allocation and dispatch costs are not what we measure
    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time
    )
    times_ms = np.asarray(m.times) * 1e3
    return float(np.median(times_ms)), float(np.percentile(times_ms, 20)), float(np.percentile(times_ms, 80))


def _time_cuda(fn: Callable[[], Any]) -> tuple[float, float, float]:
    import triton.testing

    median, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
    return float(median), float(p20), float(p80)


@dataclass
class BenchTable:
    """The timings of one comparison, with the ratios a reader wants to see."""

    op: str
    shape: str
    dtype: str
    device: str
    reference: str
    best: str | None
    timings: list[Timing]
    bytes_moved: int | None = None
    flops: int | None = None
    machine: str = field(default="")
    peak_tflops: float | None = None

    def timing(self, provider: str) -> Timing:
        for t in self.timings:
            if t.provider == provider:
                return t
        raise KeyError(f"provider {provider!r} was not measured (have {[t.provider for t in self.timings]})")

    def speedup(self, provider: str, over: str) -> float:
        """How many times faster ``provider`` is than ``over`` (median over median)."""
        return self.timing(over).median_ms / self.timing(provider).median_ms

    def rows(self) -> list[dict[str, Any]]:
        """CSV-ready rows, one per provider."""
        out = []
        for t in self.timings:
            seconds = t.median_ms * 1e-3
            out.append({
                "op": self.op, "provider": t.provider, "shape": self.shape, "dtype": self.dtype,
                "median_ms": f"{t.median_ms:.6g}", "p20_ms": f"{t.p20_ms:.6g}", "p80_ms": f"{t.p80_ms:.6g}",
                "speedup_vs_reference": f"{self.speedup(t.provider, self.reference):.3g}",
                "speedup_vs_best": f"{self.speedup(t.provider, self.best):.3g}" if self.best else "",
                "gbps": f"{self.bytes_moved / seconds / 1e9:.4g}" if self.bytes_moved else "",
                "tflops": f"{self.flops / seconds / 1e12:.4g}" if self.flops else "",
                "pct_of_peak": (f"{100 * self.flops / seconds / 1e12 / self.peak_tflops:.3g}"
                                if self.flops and self.peak_tflops else ""),
                "device": self.machine, "versions": versions(),
            })
        return out

    def __str__(self) -> str:
        head = f"{self.op} · {self.shape} · {self.dtype} · {self.machine}"
        cols = ["provider", "median ms", "p20–p80 ms", f"× {self.reference}"] + ([f"× {self.best}"] if self.best else [])
        if self.bytes_moved:
            cols.append("GB/s")
        if self.flops:
            cols += ["TFLOP/s"] + (["% peak"] if self.peak_tflops else [])
        rows = []
        for row, t in zip(self.rows(), self.timings):
            cells = [t.provider, f"{t.median_ms:.4g}", f"{t.p20_ms:.4g}–{t.p80_ms:.4g}", row["speedup_vs_reference"]]
            cells += [row["speedup_vs_best"]] if self.best else []
            cells += [row["gbps"]] if self.bytes_moved else []
            cells += [row["tflops"]] if self.flops else []
            cells += [row["pct_of_peak"]] if self.flops and self.peak_tflops else []
            rows.append([str(c) for c in cells])
        widths = [max(14, *(len(r[i]) for r in rows)) if rows else 14 for i in range(len(cols))]
        widths[0] = max([len(cols[0])] + [len(r[0]) for r in rows])
        lines = [head, "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cols, widths)))]
        for cells in rows:
            lines.append("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))))
        return "\n".join(lines)

    def show(self) -> None:
        print(self)

    def write_csv(self, path: Path | str) -> None:
        """Append this table's rows to ``path`` (header written when the file is new)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(self.rows())


def compare(
    op: str,
    providers: dict[str, Callable[[], Any]],
    *,
    shape: str,
    dtype: str,
    reference: str,
    best: str | None = None,
    device: str | None = None,
    bytes_moved: int | None = None,
    flops: int | None = None,
    peak_tflops: float | None = None,
    min_run_time: float = 0.2,
) -> BenchTable:
    """Time each zero-argument callable in ``providers`` on this machine, one after another.

    ``reference`` and ``best`` name providers to divide by. ``bytes_moved``/``flops`` (per call)
    add GB/s and TFLOP/s columns; ``peak_tflops`` (the device's peak for this dtype) a % of peak
    column. On CUDA each callable must launch its own work; do_bench syncs.
    """
    if not providers:
        raise ValueError("providers: expected at least one name → zero-argument callable")
    for name in (reference, best):
        if name is not None and name not in providers:
            raise ValueError(f"reference/best: {name!r} is not one of the providers {list(providers)}")
    for name, fn in providers.items():
        if not callable(fn):
            raise TypeError(f"providers[{name!r}]: expected a zero-argument callable, got {type(fn).__name__}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    timings = []
    for name, fn in providers.items():
        median, p20, p80 = _time_cuda(fn) if device == "cuda" else _time_cpu(fn, min_run_time)
        timings.append(Timing(name, median, p20, p80))
    return BenchTable(op, shape, dtype, device, reference, best, timings, bytes_moved, flops, machine(device),
                      peak_tflops)


BenchFn = Callable[[str], list[BenchTable]]
REGISTRY: dict[str, BenchFn] = {}


def register(name: str) -> Callable[[BenchFn], BenchFn]:
    """Register ``fn(device) -> list[BenchTable]`` under ``name`` for ``python -m lib.benchmarks``."""

    def wrap(fn: BenchFn) -> BenchFn:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn

    return wrap


def _load_benchmarks() -> None:
    import lib.benchmarks

    for mod in pkgutil.iter_modules(lib.benchmarks.__path__):
        if not mod.name.startswith("_"):  # not __main__, which would run the command line
            importlib.import_module(f"lib.benchmarks.{mod.name}")


def run_registered(device: str, out: Path | None, names: list[str] | None = None) -> list[BenchTable]:
    """Run the registered benchmarks (all, or ``names``) on ``device``; append rows to ``out``."""
    _load_benchmarks()
    unknown = sorted(set(names or []) - set(REGISTRY))
    if unknown:
        raise SystemExit(f"lib.benchmarks: unknown benchmark(s) {unknown}; registered: {sorted(REGISTRY)}")
    tables = []
    for name in names or sorted(REGISTRY):
        for table in REGISTRY[name](device):
            table.show()
            print()
            if out is not None:
                table.write_csv(out)
            tables.append(table)
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.benchmarks", description="Run the book's benchmarks.")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all registered)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, help="CSV file to write (replaced)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("lib.benchmarks: --device cuda needs a CUDA GPU; none is visible to torch")
    if args.device == "cpu":
        torch.set_num_threads(2)  # the book's reference machine has 2 cores
    if args.out is not None and args.out.exists():
        args.out.unlink()
    run_registered(args.device, args.out, args.names)
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


