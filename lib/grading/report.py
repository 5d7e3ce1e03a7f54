"""The grader's two outputs: ``gradebook.csv`` (points) and ``report.json`` (everything, with reasons)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from lib.exercises import Exercise
from lib.grading.runner import Limits, StudentResult

__all__ = ["write_gradebook", "write_report"]


def write_gradebook(path: Path, results: list[StudentResult], exercises: list[Exercise]) -> None:
    """CSV, one row per student: student, points per exercise id, total, max."""
    maximum = sum(e.points for e in exercises)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["student", *(e.id for e in exercises), "total", "max"])
        for result in results:
            points = [result.exercises[e.id].points for e in exercises]
            writer.writerow([result.student, *points, result.total, maximum])


def write_report(path: Path, results: list[StudentResult], exercises: list[Exercise], limits: Limits) -> None:
    """JSON: the exercises graded, the limits, and per student every exercise's status, points and message."""
    maximum = sum(e.points for e in exercises)
    report = {
        "exercises": [
            {"id": e.id, "section": e.section, "function": e.function, "points": e.points, "summary": e.summary}
            for e in exercises
        ],
        "limits": asdict(limits),
        "students": {
            r.student: {
                "file": r.file,
                "total": r.total,
                "max": maximum,
                "exercises": {i: asdict(o) for i, o in r.exercises.items()},
                "cell_errors": r.cell_errors,
                "notebook_error": r.notebook_error,
                "runs": r.runs,
                "log": r.log,
            }
            for r in results
        },
    }
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
