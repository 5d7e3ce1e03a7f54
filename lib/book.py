"""``python -m lib.book``: check the book against the repository and report what exists.

    python -m lib.book validate        # schema, ids, files, modules, papers 1–119 exactly once
    python -m lib.book status [--json] # per section: notebook, reference, lib, kernels, tests, exercises
    python -m lib.book toc [--out DIR] # the HTML book's table of contents and papers index

Every error names the key and the section, one per line; the exit status is 1 when any exists.
Everything ``status`` prints is computed from the files, never typed by hand.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import re
import signal
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from lib.bookmodel import ROOT, Book, BookError, Chapter, Section, load_book

__all__ = ["SectionStatus", "section_status", "validate"]

N_PAPERS = 119
MAX_BUDGET_S = 60.0
SHARED_SYLLABUS = ROOT.parent / "shared" / "syllabus"


def _module_exists(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def _resolve(dotted: str) -> str | None:
    """Import ``package.module.attr``; return None when it resolves, else why not."""
    module, _, attr = dotted.rpartition(".")
    if not module:
        return f"{dotted!r} is not a dotted path module.attribute"
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # an import error of any kind is what the author needs to see
        return f"module {module} does not import ({type(err).__name__}: {err})"
    return None if hasattr(mod, attr) else f"{module} has no attribute {attr!r}"


@functools.cache
def _registered_exercises() -> dict:
    from lib.exercises import EXERCISES

    return EXERCISES


def _check_chapter(ch: Chapter, index: int, errors: list[str]) -> None:
    where = f"book.yml: chapter {ch.id}"
    if not re.fullmatch(r"\d{2}", ch.id) or int(ch.id) != index:
        errors.append(f"{where}: id: expected \"{index:02d}\" (two digits, chapters in order from 00)")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", ch.slug):
        errors.append(f"{where}: slug: expected lowercase letters, digits and _, got {ch.slug!r}")
    if ch.syllabus is not None and SHARED_SYLLABUS.is_dir() and not (SHARED_SYLLABUS / ch.syllabus).is_file():
        errors.append(f"{where}: syllabus: {ch.syllabus} is not in {SHARED_SYLLABUS}")
    for k, s in enumerate(ch.sections, start=1):
        if s.id != f"{ch.id}.{k}":
            errors.append(f"book.yml: section {s.id}: id: expected \"{ch.id}.{k}\" (sections numbered in order)")


def _check_paper(s: Section, errors: list[str]) -> None:
    where = f"book.yml: section {s.id}: paper"
    if s.paper is None:
        if s.chapter_id != "00":
            errors.append(f"{where}: expected the section's paper (n, title, arxiv, year); only chapter 00 has none")
        return
    if not 1 <= s.paper.n <= N_PAPERS:
        errors.append(f"{where}: n: expected 1–{N_PAPERS}, got {s.paper.n}")
    if not re.fullmatch(r"\d{4}\.\d{4,5}", s.paper.arxiv):
        errors.append(f"{where}: arxiv: expected an id like 2307.08691, got {s.paper.arxiv!r}")
    if not 1990 <= s.paper.year <= 2100:
        errors.append(f"{where}: year: expected a four-digit year, got {s.paper.year}")


def _check_files(ch: Chapter, s: Section, errors: list[str]) -> None:
    where = f"book.yml: section {s.id}"
    if not 0 < s.budget_s <= MAX_BUDGET_S:
        errors.append(f"{where}: budget_s: expected 0 < budget_s ≤ {MAX_BUDGET_S:g} seconds, got {s.budget_s:g}")
    if s.notebook is None:
        return
    number = int(s.id.split(".")[1])
    pattern = rf"chapters/{re.escape(ch.dirname)}/{number:02d}_[a-z0-9_]+\.py"
    if not re.fullmatch(pattern, s.notebook):
        errors.append(f"{where}: notebook: expected a path like chapters/{ch.dirname}/{number:02d}_name.py, got {s.notebook}")
    elif not (ROOT / s.notebook).is_file():
        errors.append(f"{where}: notebook: {s.notebook} does not exist")
    for key in ("reference", "lib", "tests"):
        if not getattr(s, key):
            errors.append(f"{where}: {key}: a written section must list at least one")
    if not s.data:
        errors.append(f"{where}: data: a written section must say where its data come from")
    for dotted in s.reference:
        problem = _resolve(dotted)
        if problem:
            errors.append(f"{where}: reference: {problem}")
    for key in ("lib", "kernels"):
        for dotted in getattr(s, key):
            if not dotted.startswith(f"{key}.") or not _module_exists(dotted):
                errors.append(f"{where}: {key}: module {dotted} does not exist")
    for path in s.tests:
        if not path.startswith("tests/") or not (ROOT / path).is_file():
            errors.append(f"{where}: tests: {path} does not exist under tests/")


def _check_exercises(book: Book, errors: list[str]) -> None:
    registered = _registered_exercises()
    listed = Counter(e for s in book.sections for e in s.exercises)
    for ex_id, count in listed.items():
        if count > 1:
            errors.append(f"book.yml: exercises: {ex_id} is listed {count} times")
    for ch in book.chapters:
        for s in ch.sections:
            for ex_id in s.exercises:
                where = f"book.yml: section {s.id}: exercises: {ex_id}"
                if not re.fullmatch(rf"{re.escape(s.id)}[a-z]", ex_id):
                    errors.append(f"{where}: expected the section id plus a letter, like {s.id}a")
                elif ex_id not in registered:
                    errors.append(f"{where}: has no check registered in lib.exercises")
        if any(s.exercises for s in ch.sections):
            for path in (ch.solution_file, ch.exercise_file):
                if not path.is_file():
                    errors.append(f"book.yml: chapter {ch.id}: {path.relative_to(ROOT)} does not exist")
    for ex_id in sorted(set(registered) - set(listed)):
        errors.append(f"lib.exercises: exercise {ex_id} is registered but no section of book.yml lists it")


def _check_papers(book: Book, errors: list[str]) -> None:
    numbers = Counter(s.paper.n for s in book.sections if s.paper)
    for n, count in sorted(numbers.items()):
        if count > 1:
            owners = ", ".join(s.id for s in book.sections if s.paper and s.paper.n == n)
            errors.append(f"book.yml: paper {n} appears {count} times (sections {owners})")
    missing = [n for n in range(1, N_PAPERS + 1) if n not in numbers]
    if missing:
        errors.append(f"book.yml: paper(s) {', '.join(map(str, missing))} have no section (every paper 1–{N_PAPERS} exactly once)")
    outline = SHARED_SYLLABUS / "outline.json"
    if outline.is_file():
        expected = {s["id"]: s["paper"] for ch in json.loads(outline.read_text()) for s in ch["sections"]}
        for s in book.sections:
            if s.id in expected and s.paper and s.paper.n != expected[s.id]["n"]:
                errors.append(f"book.yml: section {s.id}: paper: n is {s.paper.n}, the syllabus outline says {expected[s.id]['n']}")
            if s.paper and s.id not in expected:
                errors.append(f"book.yml: section {s.id}: not in the syllabus outline")


def validate(book: Book) -> list[str]:
    """Every problem with the book, one line each (empty when the book is sound)."""
    errors: list[str] = []
    ids = Counter(s.id for s in book.sections)
    errors += [f"book.yml: section {i}: id appears {c} times" for i, c in ids.items() if c > 1]
    for index, ch in enumerate(book.chapters):
        _check_chapter(ch, index, errors)
        for s in ch.sections:
            _check_paper(s, errors)
            _check_files(ch, s, errors)
    _check_papers(book, errors)
    _check_exercises(book, errors)
    return errors


@dataclass(frozen=True)
class SectionStatus:
    """What exists for one section, computed from the files."""

    id: str
    title: str
    paper: int | None
    notebook: bool
    reference: bool
    lib: bool
    kernels: bool | None  # None: the section lists no kernel
    tests: bool
    exercises: bool | None  # None: the section lists no exercise

    @property
    def complete(self) -> bool:
        parts = (self.notebook, self.reference, self.lib, self.tests, self.kernels, self.exercises)
        return all(p is not False for p in parts) and self.notebook


def section_status(s: Section) -> SectionStatus:
    registered = _registered_exercises()
    return SectionStatus(
        id=s.id,
        title=s.title,
        paper=s.paper.n if s.paper else None,
        notebook=bool(s.notebook) and (ROOT / s.notebook).is_file(),
        reference=bool(s.reference) and all(_resolve(r) is None for r in s.reference),
        lib=bool(s.lib) and all(_module_exists(m) for m in s.lib),
        kernels=all(_module_exists(m) for m in s.kernels) if s.kernels else None,
        tests=bool(s.tests) and all((ROOT / t).is_file() for t in s.tests),
        exercises=all(e in registered for e in s.exercises) if s.exercises else None,
    )


def _mark(value: bool | None) -> str:
    return {True: "✓", False: "·", None: "–"}[value]


def print_status(book: Book) -> None:
    print("section  nb ref lib krn tst ex  paper  title")
    for ch in book.chapters:
        statuses = [section_status(s) for s in ch.sections]
        done = sum(st.complete for st in statuses)
        print(f"── chapter {ch.id} {ch.title}: {done} of {len(statuses)} sections complete")
        for st in statuses:
            marks = "  ".join(_mark(v) for v in (st.notebook, st.reference, st.lib, st.kernels, st.tests, st.exercises))
            paper = f"{st.paper:>5}" if st.paper else "    –"
            print(f"{st.id:<7}  {marks}  {paper}  {st.title}")
    all_status = [section_status(s) for s in book.sections]
    papers = sum(1 for s in book.sections if s.paper)
    written = sum(st.complete for st in all_status if st.paper)
    print("legend: ✓ exists · missing – none listed; complete = the notebook and every listed part exist")
    print(f"paper sections listed: {papers} of {N_PAPERS}; complete: {written}")
    print(f"all sections complete: {sum(st.complete for st in all_status)} of {len(all_status)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("validate", help="check book.yml against the repository")
    status = sub.add_parser("status", help="what exists per section")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    toc = sub.add_parser("toc", help="generate the HTML book's table of contents and papers index")
    toc.add_argument("--out", type=Path, default=ROOT / "_build" / "book_src")
    parser.add_argument("--book", type=Path, default=ROOT / "book.yml", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `status | head` ends quietly
    try:
        book = load_book(args.book)
    except BookError as err:
        print(err, file=sys.stderr)
        return 1
    if args.command == "validate":
        errors = validate(book)
        for line in errors:
            print(line, file=sys.stderr)
        if errors:
            print(f"{len(errors)} problem(s) in book.yml", file=sys.stderr)
            return 1
        n_written = sum(s.written for s in book.sections)
        print(f"book.yml is valid: {len(book.chapters)} chapters, {len(book.sections)} sections, "
              f"papers 1–{N_PAPERS} each once, {n_written} written section(s) checked")
        return 0
    if args.command == "status":
        if args.json:
            print(json.dumps([asdict(section_status(s)) | {"chapter": s.chapter_id} for s in book.sections], indent=1))
        else:
            print_status(book)
        return 0
    from lib.htmlbook import write_toc

    for path in write_toc(book, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
