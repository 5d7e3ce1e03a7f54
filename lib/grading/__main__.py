"""Command line of the grader; ``python -m lib.grading --help`` (documentation: :mod:`lib.grading`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lib.grading
from lib.exercises import Exercise
from lib.grading.notebooks import NotebookError, code_cells, find_submissions, student_names
from lib.grading.report import write_gradebook, write_report
from lib.grading.runner import Limits, Submission, grade_all
from lib.grading.selection import chapter_exercises, infer_exercises


def _positive(kind: type, name: str):
    """argparse type: a positive ``kind`` or a one-line error naming ``name``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"{name}: expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    doc = lib.grading.__doc__
    parser = argparse.ArgumentParser(
        prog="python -m lib.grading", description=doc.split("\n")[0],
        epilog=doc.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR", help="folder of student notebooks")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT_DIR", help="where the gradebook goes")
    parser.add_argument("--chapter", help="grade this chapter's exercises, e.g. 00 (default: inferred)")
    parser.add_argument("--timeout", type=_positive(float, "--timeout"), default=60.0,
                        help="wall-clock seconds per submission attempt (default 60)")
    parser.add_argument("--memory-mb", type=_positive(int, "--memory-mb"), default=4096,
                        help="address-space limit per submission in MiB (default 4096)")
    parser.add_argument("--cell-timeout", type=_positive(float, "--cell-timeout"), default=10.0,
                        help="seconds per notebook cell (default 10)")
    parser.add_argument("--check-timeout", type=_positive(float, "--check-timeout"), default=10.0,
                        help="seconds per exercise check (default 10)")
    parser.add_argument("--attempts", type=_positive(int, "--attempts"), default=3,
                        help="runs per submission when a cell or check kills the process (default 3)")
    parser.add_argument("--jobs", type=_positive(int, "--jobs"), default=1,
                        help="submissions graded at the same time (default 1)")
    return parser


def _submissions(folder: Path) -> list[Submission]:
    """The folder's notebooks as submissions; ``ValueError`` (one line) when there are none."""
    if not folder.is_dir():
        raise ValueError(f"SUBMISSIONS_DIR: {folder} is not a folder")
    paths = find_submissions(folder)
    if not paths:
        raise ValueError(f"SUBMISSIONS_DIR: {folder} holds no .ipynb or .py notebooks")
    names = student_names(paths)
    return [Submission(names[p], p) for p in paths]


def _exercises(chapter: str | None, submissions: list[Submission]) -> list[Exercise]:
    if chapter is not None:
        return chapter_exercises(chapter)
    readable = []
    for submission in submissions:
        try:
            readable.append(code_cells(submission.path))
        except NotebookError:
            continue
    return infer_exercises(readable)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        submissions = _submissions(args.submissions)
        exercises = _exercises(args.chapter, submissions)
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out: {args.out} exists and is not a folder")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    limits = Limits(args.timeout, args.memory_mb, args.cell_timeout, args.check_timeout, args.attempts)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"grading {len(submissions)} submission(s) on {', '.join(e.id for e in exercises)}", flush=True)
    results = grade_all(submissions, exercises, limits, args.out / "logs", jobs=args.jobs)
    write_gradebook(args.out / "gradebook.csv", results, exercises)
    write_report(args.out / "report.json", results, exercises, limits)
    print(f"wrote {args.out / 'gradebook.csv'} and {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
