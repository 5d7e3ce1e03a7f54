"""The book as data: ``book.yml`` parsed into chapters and sections.

``book.yml`` is the one source of what the book contains. Everything else — the status table,
the HTML table of contents, the papers index, the notebook tests and their time budgets — is
computed from the objects this module returns. Loading does no checking beyond what is needed to
build the objects; :mod:`lib.book` validates the file against the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK_FILE = ROOT / "book.yml"

__all__ = ["ROOT", "BOOK_FILE", "Book", "BookError", "Chapter", "Paper", "Section", "load_book"]


class BookError(ValueError):
    """A problem with ``book.yml``; the message names the key and the section."""


@dataclass(frozen=True)
class Paper:
    n: int
    title: str
    arxiv: str
    year: int

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    paper: Paper | None
    notebook: str | None
    reference: tuple[str, ...]
    lib: tuple[str, ...]
    kernels: tuple[str, ...]
    tests: tuple[str, ...]
    exercises: tuple[str, ...]
    data: str | None
    budget_s: float
    chapter_id: str

    @property
    def written(self) -> bool:
        """A section is written once it names its notebook."""
        return self.notebook is not None

    @property
    def notebook_path(self) -> Path | None:
        return ROOT / self.notebook if self.notebook else None


@dataclass(frozen=True)
class Chapter:
    id: str
    slug: str
    title: str
    syllabus: str | None
    sections: tuple[Section, ...]

    @property
    def dirname(self) -> str:
        """``01_attention``: the folder under chapters/ and the stem of the exercise files."""
        return f"{self.id}_{self.slug}"

    @property
    def solution_file(self) -> Path:
        return ROOT / "solutions" / f"{self.dirname}.py"

    @property
    def exercise_file(self) -> Path:
        return ROOT / "exercises" / f"{self.dirname}.py"


@dataclass(frozen=True)
class Book:
    chapters: tuple[Chapter, ...]

    @property
    def sections(self) -> tuple[Section, ...]:
        return tuple(s for c in self.chapters for s in c.sections)

    def section(self, section_id: str) -> Section:
        for s in self.sections:
            if s.id == section_id:
                return s
        raise KeyError(f"section {section_id!r} is not in book.yml")

    def chapter(self, chapter_id: str) -> Chapter:
        for c in self.chapters:
            if c.id == chapter_id:
                return c
        raise KeyError(f"chapter {chapter_id!r} is not in book.yml")


SECTION_KEYS = ("id", "title", "paper", "notebook", "reference", "lib", "kernels", "tests", "exercises", "data", "budget_s")
CHAPTER_KEYS = ("id", "slug", "title", "syllabus", "sections")
PAPER_KEYS = ("n", "title", "arxiv", "year")


def _require(mapping: Any, keys: tuple[str, ...], where: str) -> dict:
    if not isinstance(mapping, dict):
        raise BookError(f"book.yml: {where}: expected a mapping with keys {', '.join(keys)}, got {type(mapping).__name__}")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise BookError(f"book.yml: {where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(mapping) - set(keys))
    if unknown:
        raise BookError(f"book.yml: {where}: unknown key(s) {', '.join(unknown)} (expected {', '.join(keys)})")
    return mapping


def _str_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BookError(f"book.yml: {where}: {key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _paper(raw: Any, where: str) -> Paper | None:
    if raw is None:
        return None
    raw = _require(raw, PAPER_KEYS, f"{where}: paper")
    if not isinstance(raw["n"], int) or not isinstance(raw["year"], int):
        raise BookError(f"book.yml: {where}: paper: n and year must be integers")
    return Paper(raw["n"], str(raw["title"]), str(raw["arxiv"]), raw["year"])


def _section(raw: Any, chapter_id: str, index: int) -> Section:
    where = f"chapter {chapter_id}, section #{index + 1}"
    raw = _require(raw, SECTION_KEYS, where)
    where = f"section {raw['id']}"
    budget = raw["budget_s"]
    if not isinstance(budget, (int, float)) or isinstance(budget, bool):
        raise BookError(f"book.yml: {where}: budget_s: expected a number of seconds, got {budget!r}")
    for key in ("id", "title"):
        if not isinstance(raw[key], str):
            raise BookError(f"book.yml: {where}: {key}: expected a quoted string, got {raw[key]!r}")
    return Section(
        id=raw["id"],
        title=raw["title"],
        paper=_paper(raw["paper"], where),
        notebook=raw["notebook"],
        reference=_str_list(raw["reference"], "reference", where),
        lib=_str_list(raw["lib"], "lib", where),
        kernels=_str_list(raw["kernels"], "kernels", where),
        tests=_str_list(raw["tests"], "tests", where),
        exercises=_str_list(raw["exercises"], "exercises", where),
        data=raw["data"],
        budget_s=float(budget),
        chapter_id=chapter_id,
    )


def _chapter(raw: Any, index: int) -> Chapter:
    raw = _require(raw, CHAPTER_KEYS, f"chapter #{index + 1}")
    if not isinstance(raw["id"], str):
        raise BookError(f"book.yml: chapter #{index + 1}: id: expected a quoted string like \"01\", got {raw['id']!r}")
    if not isinstance(raw["sections"], list):
        raise BookError(f"book.yml: chapter {raw['id']}: sections: expected a list")
    sections = tuple(_section(s, raw["id"], i) for i, s in enumerate(raw["sections"]))
    return Chapter(raw["id"], str(raw["slug"]), str(raw["title"]), raw["syllabus"], sections)


def load_book(path: Path | str = BOOK_FILE) -> Book:
    """Parse ``book.yml`` into a :class:`Book`; raises :class:`BookError` naming the key and section."""
    path = Path(path)
    if not path.is_file():
        raise BookError(f"book.yml: file not found at {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise BookError(f"book.yml: not valid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("chapters"), list):
        raise BookError("book.yml: expected a top-level key 'chapters' holding a list of chapters")
    return Book(tuple(_chapter(c, i) for i, c in enumerate(raw["chapters"])))
