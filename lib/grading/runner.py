"""Grading one submission: run it in a limited subprocess, retry around crashes, keep every result.

The child (:mod:`lib.grading.child`) reports each step as a JSON line before and after it runs.
If it is killed — wall-clock limit, memory, a segfault, ``os._exit`` — the results already written
stand, and the step that was running is known. A cell that brought the process down is skipped on
the next attempt; a check that did is recorded as a timeout (wall clock) or an error (anything
else) and not retried. So a crash or a hang costs only the cell or exercise that caused it, within
``Limits.attempts`` runs of the submission. What is still unchecked after that is an error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.exercises import Exercise
from lib.grading.notebooks import NotebookError, code_cells

__all__ = ["Limits", "Outcome", "StudentResult", "Submission", "grade_all", "grade_submission"]

STATUSES = ("passed", "failed", "error", "missing", "timeout")
OUTPUT_LIMIT_MB = 64  # largest file (the log included) a submission may write

# Runs in the fresh interpreter before anything is imported, so torch and the student's code all
# live under the limits; then hands over to the child module. Hard limit = soft: no raising it back.
_BOOTSTRAP = """\
import resource, runpy, sys
memory = int(sys.argv.pop(1)) << 20
for which, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, %d << 20), (resource.RLIMIT_CORE, 0)):
    hard = resource.getrlimit(which)[1]
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))
runpy.run_module("lib.grading.child", run_name="__main__", alter_sys=True)
""" % OUTPUT_LIMIT_MB


@dataclass(frozen=True)
class Limits:
    """Per-submission limits: wall clock per attempt, address space, per cell, per check, attempts."""

    timeout_s: float = 60.0
    memory_mb: int = 4096
    cell_timeout_s: float = 10.0
    check_timeout_s: float = 10.0
    attempts: int = 3


@dataclass(frozen=True)
class Submission:
    """One student's notebook file."""

    student: str
    path: Path


@dataclass
class Outcome:
    """How one exercise went for one student."""

    status: str
    points: int
    message: str
    seconds: float | None = None


@dataclass
class StudentResult:
    """Everything the gradebook and the report say about one student."""

    student: str
    file: str
    exercises: dict[str, Outcome]
    cell_errors: list[dict] = field(default_factory=list)
    notebook_error: str | None = None
    runs: list[dict] = field(default_factory=list)
    log: str | None = None

    @property
    def total(self) -> int:
        return sum(outcome.points for outcome in self.exercises.values())


@dataclass
class _ChildRun:
    """What one attempt left behind: its events and how the process ended."""

    events: list[dict]
    returncode: int
    timed_out: bool
    seconds: float

    def cause(self, limits: Limits) -> str:
        """Why the process stopped early, as a phrase: 'ran past the 60 s limit and was killed'."""
        if self.timed_out:
            return f"ran past the {limits.timeout_s:g} s limit and was killed"
        if self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            hint = {"SIGKILL": " (often the memory limit)", "SIGXFSZ": f" (a file over {OUTPUT_LIMIT_MB} MB)"}
            return f"was killed by {name}{hint.get(name, '')}"
        return f"exited early with status {self.returncode}"


@dataclass
class _Progress:
    """The events of one attempt, folded: what finished, and what was running when it stopped."""

    ready: bool = False
    finished: bool = False
    running: tuple[str, Any] | None = None
    cells: dict[int, dict] = field(default_factory=dict)
    checks: dict[str, dict] = field(default_factory=dict)


def _read_events(path: Path) -> list[dict]:
    """The JSON objects of ``path``, one a line; a torn or foreign line is skipped."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _fold(events: list[dict], wanted: set[str]) -> _Progress:
    """Fold an attempt's events. A check result counts only right after its own ``check_start``
    (so a line a notebook cell forged into the file is ignored), and a later one replaces an earlier."""
    progress = _Progress()
    for event in events:
        kind = event.get("event")
        if kind == "ready":
            progress.ready = True
        elif kind in ("cell_start", "check_start"):
            progress.running = (kind[:-6], event.get("cell", event.get("id")))
        elif kind == "cell" and isinstance(event.get("cell"), int):
            progress.cells[event["cell"]] = event
            progress.running = None
        elif kind == "check" and progress.running == ("check", event.get("id")) and event.get("id") in wanted:
            if event.get("status") in STATUSES:
                progress.checks[event["id"]] = event
            progress.running = None
        elif kind == "done":
            progress.finished = True
    return progress


def _child_env() -> dict[str, str]:
    """The grader's environment, with one thread per math library and no GUI backend."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _kill_group(pid: int) -> None:
    """SIGKILL the child's whole process group (whatever the student started goes too)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _run_child(work: Path, ids: list[str], skip: set[int], limits: Limits, log: Path, attempt: int) -> _ChildRun:
    """One attempt: start the child under the limits, wait at most ``timeout_s``, collect its events."""
    results = work / f"results-{attempt}.jsonl"
    command = [
        sys.executable, "-c", _BOOTSTRAP, str(limits.memory_mb), str(work / "cells.json"), str(results),
        "--exercises", ",".join(ids), "--skip-cells", ",".join(map(str, sorted(skip))),
        "--cell-timeout", str(limits.cell_timeout_s), "--check-timeout", str(limits.check_timeout_s),
    ]
    started = time.monotonic()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"===== attempt {attempt}: exercises {', '.join(ids)} =====\n")
        out.flush()
        process = subprocess.Popen(
            command, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=_child_env(), start_new_session=True,
        )
        try:
            process.wait(timeout=limits.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(process.pid)
        returncode = process.wait()
    return _ChildRun(_read_events(results), returncode, timed_out, round(time.monotonic() - started, 2))


def _cell_error(index: int, sources: list[str], status: str, message: str) -> dict:
    lines = sources[index - 1].strip().splitlines() if 0 < index <= len(sources) else []
    return {"cell": index, "first_line": lines[0][:120] if lines else "", "status": status, "message": message}


def _record(progress: _Progress, by_id: dict[str, Exercise], sources: list[str], result: StudentResult,
            cell_errors: dict[int, dict]) -> None:
    """Copy an attempt's finished cells (errors only) and checks into the student's result."""
    for index, event in progress.cells.items():
        if event.get("status") != "ok":
            cell_errors[index] = _cell_error(index, sources, str(event.get("status")), str(event.get("message", "")))
    for exercise_id, event in progress.checks.items():
        points = by_id[exercise_id].points if event["status"] == "passed" else 0
        result.exercises[exercise_id] = Outcome(event["status"], points, str(event.get("message", "")),
                                                event.get("seconds"))


def _blame(run: _ChildRun, progress: _Progress, limits: Limits, sources: list[str], result: StudentResult,
           cell_errors: dict[int, dict], skip: set[int]) -> bool:
    """Charge an early stop to the cell or check that was running; False when nothing was (stop retrying)."""
    if progress.running is None:
        return False
    kind, what = progress.running
    cause = run.cause(limits)
    if kind == "cell":
        skip.add(what)
        status = "timeout" if run.timed_out else "crashed"
        message = f"the process {cause} in this cell; it was skipped on retry"
        cell_errors[what] = _cell_error(what, sources, status, message)
    else:
        status = "timeout" if run.timed_out else "error"
        result.exercises[what] = Outcome(status, 0, f"the process {cause} during this check")
    return True


def grade_submission(submission: Submission, exercises: list[Exercise], limits: Limits, log: Path) -> StudentResult:
    """Grade one notebook against ``exercises``; always returns a complete result."""
    result = StudentResult(submission.student, submission.path.name, {})
    try:
        sources = code_cells(submission.path)
    except NotebookError as error:
        result.notebook_error = str(error)
        result.exercises = {e.id: Outcome("error", 0, str(error)) for e in exercises}
        return result
    by_id = {e.id: e for e in exercises}
    cell_errors: dict[int, dict] = {}
    skip: set[int] = set()
    reason = "the grader stopped after its last attempt"
    with tempfile.TemporaryDirectory(prefix="paper2kernel-grade-") as tmp:
        work = Path(tmp)
        (work / "cells.json").write_text(json.dumps(sources), encoding="utf-8")
        for attempt in range(1, limits.attempts + 1):
            todo = [e.id for e in exercises if e.id not in result.exercises]
            if not todo:
                break
            run = _run_child(work, todo, skip, limits, log, attempt)
            result.runs.append({"attempt": attempt, "returncode": run.returncode, "timed_out": run.timed_out,
                                "seconds": run.seconds})
            progress = _fold(run.events, set(todo))
            _record(progress, by_id, sources, result, cell_errors)
            if progress.finished:
                reason = "the grading process finished without reporting it"
                break
            reason = f"the grading process {run.cause(limits)}" + ("" if progress.ready else " before it started")
            if not _blame(run, progress, limits, sources, result, cell_errors, skip):
                break
        else:
            reason = f"{reason} on the last of {limits.attempts} attempts"
    for exercise in exercises:
        result.exercises.setdefault(exercise.id, Outcome("error", 0, f"not checked: {reason}"))
    result.exercises = {e.id: result.exercises[e.id] for e in exercises}
    result.cell_errors = [cell_errors[i] for i in sorted(cell_errors)]
    return result


def grade_all(submissions: list[Submission], exercises: list[Exercise], limits: Limits, logs: Path,
              jobs: int = 1) -> list[StudentResult]:
    """Grade every submission, ``jobs`` at a time; results in the order given."""
    logs.mkdir(parents=True, exist_ok=True)

    def grade(submission: Submission) -> StudentResult:
        log = logs / f"{submission.student}.log"
        log.unlink(missing_ok=True)
        result = grade_submission(submission, exercises, limits, log)
        result.log = f"{logs.name}/{log.name}" if log.exists() else None
        print(f"graded {submission.student}: {result.total}/{sum(e.points for e in exercises)}", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(grade, submissions))
