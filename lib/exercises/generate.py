"""Generate the student notebooks ``exercises/NN_slug.py`` from the masters ``solutions/NN_slug.py``.

In a master, each solution is a span of lines between two marker lines::

    def softmax_rows(x):
        \"\"\"Docstring the student keeps.\"\"\"
        # BEGIN SOLUTION
        ...the answer...
        # END SOLUTION

The generator replaces every span by one line, at the indentation of ``# BEGIN SOLUTION``::

        raise NotImplementedError("Exercise 00.1a: write softmax_rows — ...")

naming the exercise whose function encloses the span (looked up in the registry for the master's
chapter). Markers must be alone on their line, balanced and not nested; a master with a broken
or missing marker is rejected with its file name and line number. A header comment records that
the file is generated and from which master.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from lib.exercises.registry import EXERCISES

__all__ = [
    "BEGIN", "END", "MarkerError", "Span",
    "chapter_of", "definitions", "exercise_path", "find_spans", "make_exercise", "master_function", "masters",
    "write_ipynb",
]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
_MASTER_NAME = re.compile(r"^(\d{2})_[a-z0-9_]+\.py$")
_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(")


class MarkerError(ValueError):
    """A master's solution markers are unbalanced, nested, malformed or absent."""


@dataclass(frozen=True)
class Span:
    """Lines ``begin``..``end`` (0-based, both marker lines included) of one solution."""

    begin: int
    end: int
    indent: str


def _marker_of(line: str, where: str) -> str | None:
    """BEGIN or END when ``line`` is a marker line, None otherwise; malformed markers raise."""
    stripped = line.strip()
    for marker in (BEGIN, END):
        if stripped.upper().startswith(marker):
            if stripped != marker:
                raise MarkerError(f"{where}: a marker must be alone on its line as '{marker}', got {stripped!r}")
            return marker
    if "BEGIN SOLUTION" in line.upper() or "END SOLUTION" in line.upper():
        raise MarkerError(f"{where}: marker text must start the line as '{BEGIN}' or '{END}', got {stripped!r}")
    return None


def find_spans(lines: list[str], source: str) -> list[Span]:
    """The solution spans of a master's ``lines``; ``MarkerError`` naming ``source:line`` if malformed."""
    spans: list[Span] = []
    open_at: int | None = None
    for i, line in enumerate(lines):
        where = f"{source}:{i + 1}"
        marker = _marker_of(line, where)
        if marker == BEGIN and open_at is not None:
            raise MarkerError(f"{where}: '{BEGIN}' inside the span opened at line {open_at + 1} (spans cannot nest)")
        if marker == END and open_at is None:
            raise MarkerError(f"{where}: '{END}' without a '{BEGIN}' before it")
        if marker == BEGIN:
            open_at = i
        elif marker == END:
            opening = lines[open_at]
            spans.append(Span(open_at, i, opening[: len(opening) - len(opening.lstrip())]))
            open_at = None
    if open_at is not None:
        raise MarkerError(f"{source}:{open_at + 1}: '{BEGIN}' is never closed by '{END}'")
    if not spans:
        raise MarkerError(f"{source}: no '{BEGIN}' … '{END}' span, so the exercise would give the answer away")
    return spans


def _enclosing_function(lines: list[str], span: Span) -> str | None:
    """Name of the nearest ``def`` above the span that is indented less than its markers."""
    for line in reversed(lines[: span.begin]):
        match = _DEF.match(line)
        if match and len(match.group(1)) < len(span.indent):
            return match.group(2)
    return None


def _stub(lines: list[str], span: Span, chapter: str) -> str:
    """The ``raise NotImplementedError(...)`` line that replaces ``span``."""
    function = _enclosing_function(lines, span)
    owners = [e for e in EXERCISES.values() if e.chapter == chapter and e.function == function]
    if owners:
        message = f"Exercise {owners[0].id}: write the body of {function}"
    else:
        message = f"Exercise (chapter {chapter}): replace this line with your code"
    return f"{span.indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})"


def _header(master: str) -> list[str]:
    return [
        f"# Generated from {master} by `python -m lib.exercises generate`: maintainers edit that file, not this one.",
        "# Students: write each function where it raises NotImplementedError, then run the check cell below it.",
        "",
    ]


def make_exercise(text: str, master: str, chapter: str) -> str:
    """The student file for master ``text`` (named ``master`` in messages and the header)."""
    lines = text.splitlines()
    out = _header(master)
    previous_end = -1
    for span in find_spans(lines, master):
        out += lines[previous_end + 1 : span.begin]
        out.append(_stub(lines, span, chapter))
        previous_end = span.end
    out += lines[previous_end + 1 :]
    return "\n".join(out) + "\n"


def masters(root: Path) -> list[Path]:
    """The masters ``root/solutions/NN_slug.py``, sorted."""
    return sorted(p for p in (root / "solutions").glob("*.py") if _MASTER_NAME.match(p.name))


def chapter_of(master: Path) -> str:
    """"00" for ``solutions/00_method.py``."""
    match = _MASTER_NAME.match(master.name)
    if match is None:
        raise ValueError(f"master: expected a file named NN_slug.py, got {master.name!r}")
    return match.group(1)


def exercise_path(root: Path, master: Path) -> Path:
    """``root/exercises/NN_slug.py`` for ``root/solutions/NN_slug.py``."""
    return root / "exercises" / master.name


def write_ipynb(text: str, path: Path) -> None:
    """Write percent-format ``text`` as a Jupyter notebook at ``path`` (what instructors hand out)."""
    import jupytext  # a dev dependency, needed only here

    notebook = jupytext.reads(text, fmt="py:percent")
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(notebook, str(path), fmt="ipynb")


def definitions(path: Path) -> dict:
    """The functions a notebook file defines: its top-level imports and defs run, nothing else
    (the ``check(...)`` cells of a master or a student file are skipped)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef)
    module = ast.Module(body=[node for node in tree.body if isinstance(node, keep)], type_ignores=[])
    namespace: dict = {}
    exec(compile(module, str(path), "exec"), namespace)
    return namespace


def master_function(root: Path, chapter: str, function: str):
    """The solution of ``function`` in chapter ``chapter``'s master ``root/solutions/NN_slug.py``."""
    (master,) = [p for p in masters(Path(root)) if chapter_of(p) == chapter]
    return definitions(master)[function]
