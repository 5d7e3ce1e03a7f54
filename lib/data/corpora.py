"""Real text that ships with Python itself, so every section trains on the same data offline.

Two corpora, both read from the running interpreter (nothing is downloaded):

* ``"pydoc"`` — English prose: the help topics of :mod:`pydoc_data.topics` (the text ``help("if")``
  prints), joined in sorted-key order with a blank line between topics. About 465k characters on
  CPython 3.11.
* ``"stdlib"`` — Python source: the standard library's ``.py`` files in sorted path order, each
  preceded by a line ``# ==== <path> ====``, stopping before the first file that would take the
  total past :data:`STDLIB_CAP` characters. Tests, IDLE, third-party packages, codec tables and
  build-specific files are left out (:data:`STDLIB_SKIPPED_DIRS`). About 1.9M characters on
  CPython 3.11.

Both are deterministic for a given Python version, and both change when the Python version does
(its documentation and standard library change): record ``sys.version`` beside any number measured
on them.
"""

from __future__ import annotations

import functools
import os
import sysconfig
from pathlib import Path

from lib.validation import check_choice

__all__ = ["CORPORA", "STDLIB_CAP", "STDLIB_SKIPPED_DIRS", "load_corpus", "train_val_split"]

CORPORA: dict[str, str] = {
    "pydoc": "English prose: Python's help topics (pydoc_data.topics), ~465k characters",
    "stdlib": "Python source: the standard library's .py files in path order, ~1.9M characters",
}

STDLIB_CAP = 2_000_000
"""Most characters the ``"stdlib"`` corpus holds (whole files only)."""

STDLIB_SKIPPED_DIRS = frozenset(
    {
        "__phello__",  # a frozen-module test fixture
        "__pycache__",
        "dist-packages",
        "distutils",  # deprecated, mostly compiler glue
        "encodings",  # codec tables: walls of hex literals
        "ensurepip",
        "idle_test",
        "idlelib",
        "lib-dynload",
        "lib2to3",
        "pydoc_data",  # the "pydoc" corpus
        "site-packages",
        "test",
        "tests",
        "turtledemo",
    }
)
"""Directory names (at any depth) whose files the ``"stdlib"`` corpus leaves out."""


def load_corpus(name: str) -> str:
    """Return the text of corpus ``name`` (a key of :data:`CORPORA`); cached after the first call."""
    check_choice("corpus", name, CORPORA)
    return _load(name)


@functools.cache
def _load(name: str) -> str:
    return _pydoc_text() if name == "pydoc" else _stdlib_text()


def _pydoc_text() -> str:
    """The values of ``pydoc_data.topics.topics`` in sorted-key order, separated by a blank line."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def _stdlib_files(root: Path) -> list[Path]:
    """The ``.py`` files under ``root`` that the ``"stdlib"`` corpus may use, sorted by relative path.

    Skipped directories are pruned from the walk, never entered (site-packages can be huge).
    """
    found: list[str] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not _is_skipped_dir(name)]
        relative = Path(folder).relative_to(root)
        found += [(relative / name).as_posix() for name in files if _is_library_source(name)]
    return [root / path for path in sorted(found)]


def _is_skipped_dir(name: str) -> bool:
    return name in STDLIB_SKIPPED_DIRS or name.startswith("config-")  # config-*: the build's Makefile glue


def _is_library_source(name: str) -> bool:
    return name.endswith(".py") and not name.startswith("_sysconfigdata")  # written by the build


def _stdlib_text() -> str:
    """Whole files with a separator line each, in path order, up to :data:`STDLIB_CAP` characters."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks: list[str] = []
    total = 0
    for path in _stdlib_files(root):
        source = path.read_text(encoding="utf-8")
        chunk = f"# ==== {path.relative_to(root).as_posix()} ====\n{source.rstrip()}\n\n"
        if total + len(chunk) > STDLIB_CAP:
            break
        chunks.append(chunk)
        total += len(chunk)
    return "".join(chunks)


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` into ``(train, val)``: the last ``round(len(text) * val_fraction)`` characters are validation.

    Deterministic and contiguous (no shuffling), so no window of the validation text was seen in
    training except across the one cut. Both parts must be non-empty.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: expected a number strictly between 0 and 1, got {val_fraction!r}")
    n_val = round(len(text) * val_fraction)
    if n_val == 0 or n_val == len(text):
        raise ValueError(
            f"text: expected enough characters for both parts with val_fraction={val_fraction}, got {len(text)}"
        )
    cut = len(text) - n_val
    return text[:cut], text[cut:]
