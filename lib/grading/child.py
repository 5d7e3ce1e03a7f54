"""The grading subprocess: run one submission's cells, then the checks, reporting as it goes.

Started by :mod:`lib.grading.runner` (never by hand) with its memory limit already set::

    python -m lib.grading.child CELLS_JSON RESULTS_JSONL --exercises 00.1a,00.1b
        [--skip-cells 3,7] --cell-timeout S --check-timeout S

Each code cell runs in one shared namespace under a time limit (``SIGALRM``); a cell that raises,
does not compile or runs out of time is recorded and skipped. Then every exercise's checker runs on
the function of that name, under its own time limit. Every step appends one JSON object to
RESULTS_JSONL and flushes it, *before* (``cell_start`` / ``check_start``) and *after* it runs, so
if this process is killed the parent knows what had finished and what was running. The student's
stdout and stderr go wherever the parent pointed ours (a log file); nothing printed is ever read.
"""

from __future__ import annotations

import argparse
import builtins
import json
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from lib.exercises import CheckFailed, Exercise, get_exercise
from lib.grading.notebooks import compile_cell

MESSAGE_LIMIT = 1000  # characters kept of any message


class TimeLimit(BaseException):
    """Raised by SIGALRM when a cell or a check runs past its limit (BaseException: `except Exception` misses it)."""


class Events:
    """Append-only JSON-lines channel to the parent, flushed after every line."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process

    def emit(self, event: str, **fields: Any) -> None:
        self._file.write(json.dumps({"event": event, **fields}) + "\n")
        self._file.flush()


def _on_alarm(signum: int, frame: Any) -> None:
    raise TimeLimit


def _run_limited(seconds: float, action: Callable[[], Any]) -> Any:
    """``action()``, interrupted by :class:`TimeLimit` after ``seconds`` of wall-clock time."""
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return action()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def describe(error: BaseException) -> str:
    """``Type: message (code cell 3, line 7)``, locating the innermost frame in the student's cells."""
    where = ""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename.startswith("<code cell "):
            where = f" ({frame.filename.strip('<>')}, line {frame.lineno})"
            break
    if isinstance(error, SyntaxError) and error.filename and error.filename.startswith("<code cell "):
        where = f" ({error.filename.strip('<>')}, line {error.lineno})"
        return _clip(f"SyntaxError: {error.msg}{where}")
    return _clip(f"{type(error).__name__}: {error}{where}")


def run_cell(source: str, index: int, namespace: dict, seconds: float) -> dict:
    """Compile and execute one cell in ``namespace``: {status: ok|syntax_error|error|timeout, message}."""
    started = time.monotonic()
    try:
        code = compile_cell(source, f"<code cell {index}>")
    except SyntaxError as error:
        return {"status": "syntax_error", "message": describe(error), "seconds": 0.0}
    try:
        _run_limited(seconds, lambda: exec(code, namespace))
    except TimeLimit:
        outcome = {"status": "timeout", "message": f"the cell ran past its {seconds:g} s limit and was stopped"}
    except BaseException as error:  # SystemExit and KeyboardInterrupt from a student cost that cell only
        outcome = {"status": "error", "message": describe(error)}
    else:
        outcome = {"status": "ok", "message": ""}
    return {**outcome, "seconds": round(time.monotonic() - started, 3)}


def run_check(exercise: Exercise, namespace: dict, seconds: float) -> dict:
    """Run ``exercise``'s checker on the namespace's function: {status: passed|failed|error|missing|timeout}."""
    name = exercise.function
    if name not in namespace:
        return {"status": "missing", "message": f"the notebook does not define {name}", "seconds": 0.0}
    fn = namespace[name]
    if not callable(fn):
        return {"status": "error", "message": f"{name} is a {type(fn).__name__}, not a function", "seconds": 0.0}
    started = time.monotonic()
    try:
        cases = _run_limited(seconds, lambda: exercise.checker(fn))
    except TimeLimit:
        outcome = {"status": "timeout", "message": f"{name} did not finish within the {seconds:g} s check limit"}
    except CheckFailed as failure:
        outcome = {"status": "failed", "message": _clip(str(failure))}
    except BaseException as error:
        outcome = {"status": "error", "message": describe(error)}
    else:
        outcome = {"status": "passed", "message": f"all {cases} cases pass"}
    return {**outcome, "seconds": round(time.monotonic() - started, 3)}


def _ids(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lib.grading.child")
    parser.add_argument("cells", type=Path, help="JSON list of code-cell sources")
    parser.add_argument("results", type=Path, help="JSON-lines file to append events to")
    parser.add_argument("--exercises", type=_ids, required=True)
    parser.add_argument("--skip-cells", type=lambda s: {int(i) for i in _ids(s)}, default=set())
    parser.add_argument("--cell-timeout", type=float, required=True)
    parser.add_argument("--check-timeout", type=float, required=True)
    return parser.parse_args(argv)


def _cells(path: Path, skip: set[int]) -> Iterator[tuple[int, str]]:
    """(1-based index, source) of the cells to run."""
    for index, source in enumerate(json.loads(path.read_text(encoding="utf-8")), 1):
        if index not in skip:
            yield index, source


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    events = Events(args.results)
    exercises = [get_exercise(i) for i in args.exercises]  # taken before any student code runs
    signal.signal(signal.SIGALRM, _on_alarm)
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    events.emit("ready")
    for index, source in _cells(args.cells, args.skip_cells):
        events.emit("cell_start", cell=index)
        events.emit("cell", cell=index, **run_cell(source, index, namespace, args.cell_timeout))
    for exercise in exercises:
        events.emit("check_start", id=exercise.id)
        events.emit("check", id=exercise.id, **run_check(exercise, namespace, args.check_timeout))
    events.emit("done")


if __name__ == "__main__":
    main()
