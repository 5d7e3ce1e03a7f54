"""Reading submissions: find them in a folder, turn each into a list of code-cell sources.

A submission is a Jupyter notebook (``.ipynb``) or a jupytext percent-format notebook (``.py`` with
at least one ``# %%`` line) directly inside the submissions folder. Anything else in the folder is
ignored. A file that has a notebook's name but not a notebook's content raises :class:`NotebookError`.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

__all__ = [
    "NotebookError", "SUFFIXES", "code_cells", "compile_cell", "defined_names", "find_submissions", "student_names",
]

SUFFIXES = (".ipynb", ".py")
_PERCENT_CELL = re.compile(r"^# %%", re.MULTILINE)
_MAGIC_LINE = re.compile(r"^(\s*)[%!]")


class NotebookError(ValueError):
    """The file is not a notebook the grader can read."""


def find_submissions(folder: Path) -> list[Path]:
    """The ``.ipynb`` and ``.py`` files directly inside ``folder`` (not hidden), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))


def student_names(paths: list[Path]) -> dict[Path, str]:
    """Each submission's student name: its file stem, or its full file name where two stems collide."""
    stems = [p.stem for p in paths]
    return {p: p.stem if stems.count(p.stem) == 1 else p.name for p in paths}


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _ipynb_cells(text: str) -> list[str]:
    import nbformat  # a dev dependency, like everything that reads notebooks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notebook = nbformat.reads(text, as_version=4)
        nbformat.validate(notebook)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def _percent_cells(text: str) -> list[str]:
    import jupytext

    if not _PERCENT_CELL.search(text):
        raise NotebookError("a .py submission must be a percent-format notebook with '# %%' cell markers")
    notebook = jupytext.reads(text, fmt="py:percent")
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def code_cells(path: Path) -> list[str]:
    """The sources of the code cells of notebook ``path``, in order; ``NotebookError`` if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
        return _ipynb_cells(text) if path.suffix == ".ipynb" else _percent_cells(text)
    except NotebookError:
        raise
    except Exception as error:  # JSON, schema, encoding: every way a file can fail to be a notebook
        raise NotebookError(f"not a valid notebook ({_first_line(error)})") from None


def _without_magics(source: str) -> str:
    """``source`` with IPython magic and shell lines (``%…``, ``!…``) replaced by ``pass``."""
    return "\n".join(_MAGIC_LINE.sub(r"\1pass  # ", line, count=1) for line in source.splitlines())


def compile_cell(source: str, filename: str):
    """Compile a cell; if it is not valid Python only because of IPython magics, without them.

    A cell magic (first line ``%%…``) is not Python at all and compiles to nothing.
    Raises the original ``SyntaxError`` when the cell is broken for any other reason.
    """
    if source.lstrip().startswith("%%"):
        return compile("", filename, "exec")
    try:
        return compile(source, filename, "exec")
    except SyntaxError as error:
        try:
            return compile(_without_magics(source), filename, "exec")
        except SyntaxError:
            raise error from None


def _parse(source: str) -> ast.Module | None:
    """The cell's syntax tree (magics dropped if need be), or None when it is not Python."""
    for candidate in (source, _without_magics(source)):
        try:
            return ast.parse(candidate)
        except SyntaxError:
            continue
    return None


def defined_names(cells: list[str]) -> set[str]:
    """Names bound at the top level of the cells (def, class, assignment, import); broken cells skipped."""
    names: set[str] = set()
    for source in cells:
        tree = _parse(source)
        for node in tree.body if tree else []:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names
