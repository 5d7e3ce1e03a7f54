"""Execute the book's notebooks: pair, run, time, and keep within each section's budget.

Every written section is a percent-format ``.py`` (the committed source). ``build`` pairs it to an
``.ipynb`` next to it, executes that with the current interpreter's ``python3`` kernel in the
notebook's folder, and saves it with its outputs: readers open it in JupyterLab, nbval compares
against it and the HTML book renders it. The wall time of each run is kept in
``_build/notebooks/timings.json`` with a hash of the notebook's inputs (its ``.py`` and every file
under ``lib/`` and ``kernels/``), so an unchanged notebook is not run again::

    python -m lib.notebooks build              # every written section
    python -m lib.notebooks build 00.1 --force # one section, even when its inputs are unchanged

One line per section: id, seconds, budget, OK or OVER. The exit status is 1 when a notebook raises
(the line names the section, the cell index and the error) or runs over its ``budget_s``; a single
cell is stopped after ``budget_s``. Cell indices count every cell from 0, Markdown included, as in
the ``.ipynb``.

The skeleton every section notebook follows (checked by ``tests/test_notebooks.py``)
------------------------------------------------------------------------------------
* The first cell is Markdown opening with the one level-1 heading, the page title:
  ``# 00.1 Softmax, from NumPy to a fused kernel``. No other ``#`` heading follows.
* The parts are level-2 headings, in this order, each starting with its name (a number before
  it and a subtitle after it are allowed: ``## 4. Agreement: three shapes, one tolerance``)::

      ## Idea
      ## NumPy reference
      ## Agreement
      ## Experiment
      ## Benchmark
      ## Exercises

  Other ``##`` headings may sit between them (e.g. ``## The optimized implementation`` and
  ``## The Triton kernel`` between *NumPy reference* and *Agreement*).
* Heading levels never skip (``##`` then ``####`` is an error): the HTML book is built with
  warnings as errors and its page contents come from these headings.
* At least one code cell's first line is ``# NBVAL_CHECK_OUTPUT``: the cell prints the verdict
  lines of :func:`lib.agree` and nbval compares them (``tests/nbval_sanitize.cfg`` masks the
  measured error figures, so the ✓, the name and the tolerance are what is compared). A verdict
  cell prints text only: nbval would compare a figure's PNG bytes too.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import jupytext
import nbformat
from jupytext.config import JupytextConfiguration, load_jupytext_config
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from lib.bookmodel import ROOT, Book, Section, load_book
from lib.widgets import HEADLESS_ENV

__all__ = [
    "BUILD_DIR",
    "CHECK_MARKER",
    "SKELETON",
    "NotebookError",
    "Timing",
    "build",
    "build_section",
    "executed_path",
    "input_hash",
    "jupytext_config",
    "main",
    "read_source",
    "section_timing",
    "skeleton_problems",
    "source_path",
]

BUILD_DIR = ROOT / "_build" / "notebooks"
TIMINGS_NAME = "timings.json"
INPUT_DIRS = ("lib", "kernels")
KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}
PERCENT = "py:percent"
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
SKELETON = ("Idea", "NumPy reference", "Agreement", "Experiment", "Benchmark", "Exercises")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBERING = re.compile(r"^\d+(\.\d+)*[.)]?\s+")


class NotebookError(RuntimeError):
    """A notebook that cannot be built; the message is one line naming the section."""


@dataclass(frozen=True)
class Timing:
    """One section's measured run: wall seconds against its budget, and what it was run from."""

    section_id: str
    seconds: float
    budget_s: float
    input_hash: str
    ipynb_sha256: str
    slowest_cell: int
    slowest_cell_s: float
    cached: bool = False

    @property
    def over(self) -> bool:
        return self.seconds > self.budget_s

    def line(self) -> str:
        """``00.1   12.3 s of 60 s  OK``, with the slowest cell named when over budget."""
        verdict = "OVER" if self.over else "OK"
        text = f"{self.section_id:<6} {self.seconds:6.1f} s of {self.budget_s:g} s  {verdict}"
        if self.over:
            text += f" (slowest: cell {self.slowest_cell}, {self.slowest_cell_s:.1f} s)"
        return text + (" (cached)" if self.cached else "")


# ----------------------------------------------------------------------------- paths and hashes


def source_path(section: Section) -> Path:
    """The section's committed percent ``.py``; :class:`NotebookError` when unwritten or missing."""
    if section.notebook_path is None:
        raise NotebookError(f"section {section.id}: not written yet (notebook: null in book.yml)")
    if not section.notebook_path.is_file():
        raise NotebookError(f"section {section.id}: notebook {section.notebook} does not exist")
    return section.notebook_path


def executed_path(section: Section) -> Path:
    """Where the executed notebook goes: the ``.ipynb`` next to the ``.py``."""
    return source_path(section).with_suffix(".ipynb")


def _input_files(source: Path) -> list[Path]:
    files = [source]
    for folder in INPUT_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            skipped = any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(ROOT).parts)
            if path.is_file() and not skipped and path.suffix != ".pyc":
                files.append(path)
    return files


def input_hash(source: Path) -> str:
    """SHA-256 over the notebook source and every file under ``lib/`` and ``kernels/``."""
    digest = hashlib.sha256()
    for path in _input_files(source):
        digest.update(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path).encode())
        digest.update(b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock, so parallel test workers never run one notebook twice at once."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- the timings file


def _read_timings(build_dir: Path) -> dict[str, dict]:
    path = build_dir / TIMINGS_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}  # a damaged cache only costs a re-run
    return data if isinstance(data, dict) else {}


def _update_timings(build_dir: Path, section_id: str, record: dict | None) -> None:
    """Set (or, with ``None``, drop) one section's record; written atomically under a lock."""
    with _locked(build_dir / ".timings.lock"):
        timings = _read_timings(build_dir)
        if record is None:
            timings.pop(section_id, None)
        else:
            timings[section_id] = record
        tmp = build_dir / f".{TIMINGS_NAME}.{os.getpid()}"
        tmp.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, build_dir / TIMINGS_NAME)


def section_timing(section: Section, build_dir: Path = BUILD_DIR) -> Timing | None:
    """The last recorded run of ``section`` (``None`` if it never ran); budget from ``book.yml``."""
    record = _read_timings(build_dir).get(section.id)
    if record is None:
        return None
    fields = {k: record[k] for k in ("seconds", "input_hash", "ipynb_sha256", "slowest_cell", "slowest_cell_s")}
    return Timing(section.id, budget_s=section.budget_s, cached=True, **fields)


def _is_fresh(section: Section, timing: Timing | None, digest: str) -> bool:
    ipynb = executed_path(section)
    return (
        timing is not None
        and timing.input_hash == digest
        and ipynb.is_file()
        and _file_sha256(ipynb) == timing.ipynb_sha256
    )


# ----------------------------------------------------------------------------- reading and running


def jupytext_config() -> JupytextConfiguration:
    """The repository's ``jupytext.toml``: the same options JupyterLab uses to pair notebooks."""
    config = load_jupytext_config(str(ROOT / "chapters"))
    if config is None:
        raise NotebookError(f"jupytext.toml: not found above {ROOT / 'chapters'}")
    return config


def read_source(source: Path) -> NotebookNode:
    """Read a percent-format ``.py`` as a notebook, with the kernel every book notebook uses."""
    notebook = jupytext.read(source, fmt=PERCENT, config=jupytext_config())
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    return notebook


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this one, with inline figures and Triton's CPU interpreter."""
    import torch  # deferred: only building needs it

    env = dict(os.environ)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures become outputs
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silence ipykernel's debugger warning
    # Idle OpenMP threads that spin steal the other core from a busy neighbour (another notebook,
    # a pytest worker): loops of small torch ops then slow down 10-100x. Passive waiting avoids it.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env[HEADLESS_ENV] = "1"  # no browser: lib.widgets.explore draws no sliders (see lib/widgets.py)
    if not torch.cuda.is_available():
        env.setdefault("TRITON_INTERPRET", "1")
    return env


def _cell_summary(notebook: NotebookNode, index: int) -> str:
    lines = notebook.cells[index].source.strip().splitlines()
    return f"cell {index} (`{lines[0][:60]}`)" if lines else f"cell {index}"


def _error_line(err: Exception, timeout_s: float) -> str:
    if isinstance(err, CellExecutionError):
        last = (err.evalue.strip().splitlines() or [""])[-1]
        return f"raised {err.ename}: {last}" if last else f"raised {err.ename}"
    if isinstance(err, CellTimeoutError):
        return f"timed out after {timeout_s:g} s (one cell may run at most the section's budget_s)"
    return "killed the kernel"


def execute(notebook: NotebookNode, cwd: Path, section: Section) -> list[float]:
    """Run every cell in place; return each cell's seconds. One-line :class:`NotebookError` on failure.

    A single cell may run for at most the section's ``budget_s``.
    """
    durations = [0.0] * len(notebook.cells)
    started = {"index": 0, "at": 0.0}

    def on_start(cell: NotebookNode, cell_index: int) -> None:
        started.update(index=cell_index, at=time.perf_counter())

    def on_done(cell: NotebookNode, cell_index: int, execute_reply: dict) -> None:
        durations[cell_index] = time.perf_counter() - started["at"]

    client = NotebookClient(
        notebook,
        timeout=math.ceil(section.budget_s),
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(cwd)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not its warning about local TCP
        on_cell_start=on_start,
        on_cell_executed=on_done,
    )
    try:
        client.execute(env=kernel_env())
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        where = _cell_summary(notebook, started["index"])
        raise NotebookError(f"section {section.id}: {where} {_error_line(err, section.budget_s)}") from None
    return durations


def build_section(section: Section, force: bool = False, build_dir: Path = BUILD_DIR) -> Timing:
    """Execute ``section``'s notebook unless its inputs are unchanged; return its timing.

    The executed ``.ipynb`` is written next to the ``.py`` even when a cell raises, so the
    error can be read where it happened; only a complete run is recorded.
    """
    source = source_path(section)
    ipynb = executed_path(section)
    with _locked(build_dir / f".lock-{section.id}"):
        digest = input_hash(source)
        cached = section_timing(section, build_dir)
        if not force and _is_fresh(section, cached, digest):
            return cached
        _update_timings(build_dir, section.id, None)
        notebook = read_source(source)
        start = time.perf_counter()
        try:
            durations = execute(notebook, source.parent, section)
            seconds = time.perf_counter() - start
        finally:
            nbformat.write(notebook, ipynb)
        slowest = max(range(len(durations)), key=durations.__getitem__, default=0)
        timing = Timing(section.id, seconds, section.budget_s, digest, _file_sha256(ipynb), slowest,
                        durations[slowest] if durations else 0.0)
        record = {k: v for k, v in asdict(timing).items() if k not in ("section_id", "budget_s", "cached")}
        _update_timings(build_dir, section.id, record)
        return timing


# ----------------------------------------------------------------------------- the skeleton


def _headings(notebook: NotebookNode) -> list[tuple[int, str]]:
    """(level, text) of every Markdown heading, outside fenced code blocks."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        fenced = False
        for line in cell.source.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
            match = HEADING.match(line)
            if match and not fenced:
                found.append((len(match.group(1)), match.group(2)))
    return found


def _title_problems(notebook: NotebookNode, headings: list[tuple[int, str]]) -> list[str]:
    problems = []
    first = notebook.cells[0] if notebook.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.lstrip().startswith("# "):
        problems.append("the first cell is not Markdown opening with a '# ' title")
    titles = [text for level, text in headings if level == 1]
    if len(titles) != 1:
        problems.append(f"expected exactly one level-1 '# ' heading (the page title), found {len(titles)}")
    return problems


def _level_problems(headings: list[tuple[int, str]]) -> list[str]:
    problems = []
    for (before, _), (level, text) in zip(headings, headings[1:]):
        if level > before + 1:
            problems.append(f"heading '{'#' * level} {text}' skips a level after a level-{before} heading")
    return problems


def _part_problems(headings: list[tuple[int, str]]) -> list[str]:
    parts = [NUMBERING.sub("", text).lower() for level, text in headings if level == 2]
    order = f"(parts in order: {', '.join(SKELETON)})"
    position = 0
    for name in SKELETON:
        matches = [i for i, part in enumerate(parts) if part.startswith(name.lower())]
        later = [i for i in matches if i >= position]
        if not later:
            what = "is out of order" if matches else "is missing"
            return [f"the '## {name}' part {what} {order}"]
        position = later[0] + 1
    return []


def _marker_problems(notebook: NotebookNode) -> list[str]:
    marked = [c for c in notebook.cells if c.cell_type == "code" and c.source.lstrip().startswith(CHECK_MARKER)]
    return [] if marked else [f"no code cell starts with '{CHECK_MARKER}' (the verdict cell nbval compares)"]


def skeleton_problems(notebook: NotebookNode) -> list[str]:
    """Every way ``notebook`` departs from the section skeleton (see the module docstring)."""
    headings = _headings(notebook)
    return (
        _title_problems(notebook, headings)
        + _level_problems(headings)
        + _part_problems(headings)
        + _marker_problems(notebook)
    )


# ----------------------------------------------------------------------------- the command line


def _select(book: Book, section_ids: Sequence[str]) -> list[Section]:
    if not section_ids:
        return [s for s in book.sections if s.written]
    known = {s.id: s for s in book.sections}
    unknown = [i for i in section_ids if i not in known]
    if unknown:
        raise NotebookError(f"section(s) {', '.join(unknown)}: not in book.yml (ids look like 00.1)")
    return [known[i] for i in section_ids]


def build(section_ids: Sequence[str] = (), force: bool = False, book: Book | None = None) -> int:
    """Build the chosen sections (default: every written one), print a line each; the exit status."""
    book = book or load_book()
    status = 0
    for section in _select(book, section_ids):
        try:
            timing = build_section(section, force=force)
        except NotebookError as err:
            print(f"{section.id:<6} FAILED  {err}", flush=True)
            status = 1
            continue
        print(timing.line(), flush=True)
        status |= int(timing.over)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.notebooks", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="pair, execute and time the written sections' notebooks")
    build_cmd.add_argument("sections", nargs="*", metavar="SECTION_ID", help="e.g. 00.1 (default: all written)")
    build_cmd.add_argument("--force", action="store_true", help="execute even when the inputs are unchanged")
    args = parser.parse_args(argv)
    try:
        return build(args.sections, force=args.force)
    except NotebookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
