"""The HTML book: a Sphinx source tree generated from ``book.yml``, then built with myst-nb.

    python -m lib.htmlbook build     # executes stale notebooks first; prints the path of index.html

Nothing in the source tree is typed by hand. ``_build/book_src/`` is rebuilt on every run from:

* the pages :func:`write_toc` generates — the landing page, one page per chapter (its sections in
  order: written ones link to their notebook, the others name their paper and say "not yet
  written"), one exercises page per chapter and the papers index (:func:`papers_index`);
* the executed ``.ipynb`` of every written section, as :mod:`lib.notebooks` left it (myst-nb
  renders it without running it again);
* each chapter's exercise notebook, offered as a download.

Sphinx then builds ``_build/html/`` with warnings as errors, using ``docs/book/conf.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat

from lib.bookmodel import ROOT, Book, Chapter, Paper, Section, load_book

__all__ = [
    "CONF_DIR",
    "HTML_DIR",
    "SOURCE_DIR",
    "HtmlBookError",
    "assemble",
    "build",
    "chapter_docname",
    "chapter_page",
    "exercises_page",
    "landing_page",
    "main",
    "md_escape",
    "papers_index",
    "run_sphinx",
    "section_docname",
    "toc_pages",
    "write_toc",
]

SOURCE_DIR = ROOT / "_build" / "book_src"
HTML_DIR = ROOT / "_build" / "html"
DOCTREE_DIR = ROOT / "_build" / "doctrees"
CONF_DIR = ROOT / "docs" / "book"
BOOK_TITLE = "Transformers, from Paper to Kernel"
MARKDOWN_SPECIALS = set("\\`*_{}[]<>|$#~^&!")
NOT_WRITTEN = "*not yet written*"


class HtmlBookError(RuntimeError):
    """The HTML book cannot be built; the message is one line saying why."""


# ----------------------------------------------------------------------------- names and text


def md_escape(text: str) -> str:
    """``text`` as literal Markdown: every character Markdown (or MyST) would act on is escaped."""
    return "".join(f"\\{c}" if c in MARKDOWN_SPECIALS else c for c in text)


def chapter_docname(chapter: Chapter) -> str:
    """``chapters/01_attention/index``: the chapter page, as a Sphinx document name."""
    return f"chapters/{chapter.dirname}/index"


def section_docname(section: Section, chapter: Chapter) -> str:
    """``chapters/01_attention/01_flash``: where a written section's notebook sits in the book."""
    if section.notebook is None:
        raise HtmlBookError(f"section {section.id}: not written yet, so it has no page")
    return f"chapters/{chapter.dirname}/{Path(section.notebook).stem}"


def _exercise_docname(chapter: Chapter) -> str:
    return f"chapters/{chapter.dirname}/exercises"


def _exercise_file(chapter: Chapter) -> str:
    """``exercises/01_attention.py``: the student notebook, relative to the repository and the book."""
    return f"exercises/{chapter.dirname}.py"


def _paper_text(paper: Paper) -> str:
    return f"{md_escape(paper.title)} ([arXiv {paper.arxiv}]({paper.url}), {paper.year})"


def _section_item(position: int, section: Section, chapter: Chapter) -> str:
    """One numbered line of a chapter page: the section, its link or status, and its paper."""
    title = md_escape(section.title)
    if section.written:
        head = f"**{section.id}** [{title}]({Path(section_docname(section, chapter)).name}.ipynb)"
    else:
        head = f"**{section.id}** {title} — {NOT_WRITTEN}"
    paper = f" · {_paper_text(section.paper)}" if section.paper else ""
    return f"{position}. {head}{paper}"


def _toctree(entries: Sequence[str], caption: str | None = None, hidden: bool = False) -> str:
    if not entries:
        return ""
    options = [f":caption: {caption}"] if caption else []
    options += [":hidden:"] if hidden else []
    options += [":maxdepth: 1"]
    return "\n".join(["```{toctree}", *options, "", *entries, "```"])


# ----------------------------------------------------------------------------- the pages


def landing_page(book: Book) -> str:
    """The front page: what the book is, how to run it, and the chapters' table of contents."""
    written = sum(s.written for s in book.sections)
    papers = sum(s.paper is not None for s in book.sections)
    chapters = [chapter_docname(c) for c in book.chapters]
    return f"""# {BOOK_TITLE}

Each section of this book takes one paper about transformers and rebuilds its central idea three
times: as **readable NumPy** that follows the paper's equations, as **optimized PyTorch** that a
real model could use, and — where fusion or tiling is the point — as a **Triton kernel**. Tests
prove that the three agree, with a tolerance stated and justified for each comparison; every
notebook prints its verdict lines (`✓ … ≤ atol … + rtol …`) and a small-scale experiment that
checks the paper's headline claim, then benchmarks the implementations side by side.

The book has {len(book.chapters)} chapters and {len(book.sections)} sections covering {papers} papers;
{written} section(s) are written so far. The [papers index](papers.md) lists every paper with its
section.

## Every section has the same parts

1. **Idea** — the problem, the trick and the defining equations, citing the paper.
2. **NumPy reference** — short, float64, shapes in the comments.
3. **The optimized implementation** — the library code, and what makes it fast.
4. **Agreement** — reference, library and kernel on the same inputs, asserted within a tolerance.
5. **Experiment** — the paper's claim at small scale, next to the paper's own figure.
6. **Benchmark** — reference, library and the best existing implementation, timed in one run.
7. **Exercises** — what you will implement in the chapter's exercise notebook.

## Running it yourself

Every page is a notebook generated from a plain Python file (`chapters/NN_slug/SS_name.py`).
From a checkout of the repository:

- `make lab` installs the book and opens it in JupyterLab; open any `.py` under `chapters/` or
  `exercises/` as a notebook.
- `make test` runs the library, kernel, exercise and notebook tests. Without a GPU, Triton kernels
  run under Triton's CPU interpreter.
- `make book` executes the notebooks and builds this HTML book.

{_toctree(chapters, caption="Chapters")}

{_toctree(["papers"], caption="Reference")}
"""


def chapter_page(chapter: Chapter) -> str:
    """A chapter's page: every section in order, linked when written, and its hidden toctree."""
    written = [s for s in chapter.sections if s.written]
    items = [_section_item(i, s, chapter) for i, s in enumerate(chapter.sections, start=1)]
    entries = [Path(section_docname(s, chapter)).name for s in written]
    exercises = ""
    if _has_exercises(chapter):
        entries.append("exercises")
        exercises = f"The chapter's exercises: [exercises/{chapter.dirname}.py](exercises.md).\n"
    return f"""# {chapter.id} · {md_escape(chapter.title)}

{len(chapter.sections)} section(s), {len(written)} written.

{chr(10).join(items)}

{exercises}
{_toctree(entries, hidden=True)}
"""


def _has_exercises(chapter: Chapter) -> bool:
    return any(s.exercises for s in chapter.sections)


def exercises_page(chapter: Chapter) -> str:
    """What the chapter's student notebook asks, per section, and the file to open."""
    name = _exercise_file(chapter)
    if chapter.exercise_file.is_file():
        where = (f"Open {{download}}`{name} </{name}>` in JupyterLab (`make lab`): jupytext opens it as a "
                 "notebook. Each exercise is a function to complete; a check in the notebook tells you at "
                 "once whether it is right.")
    else:
        where = f"The exercise notebook `{name}` is {NOT_WRITTEN}."
    rows = [f"- **{s.id}** {md_escape(s.title)}: {', '.join(s.exercises)}" for s in chapter.sections if s.exercises]
    listing = "\n".join(rows) if rows else "No exercises are listed for this chapter yet."
    return f"""# Exercises · {md_escape(chapter.title)}

{where}

{listing}
"""


def _papers_row(paper: Paper, section: Section, chapter: Chapter) -> str:
    link = f"[{section.id}]({section_docname(section, chapter)}.ipynb)" if section.written else section.id
    return f"| {paper.n} | [{paper.arxiv}]({paper.url}) | {md_escape(paper.title)} | {paper.year} | {link} |"


def papers_index(book: Book) -> str:
    """The papers index page: one table row per paper, by number, linking arXiv and its section."""
    rows = sorted(
        ((s.paper.n, _papers_row(s.paper, s, c)) for c in book.chapters for s in c.sections if s.paper),
        key=lambda row: row[0],
    )
    table = "\n".join(row for _, row in rows)
    return f"""# Papers index

The {len(rows)} papers of the book, by number. A section id is a link once the section is written.

| # | arXiv | Title | Year | Section |
|--:|:--|:--|--:|:--|
{table}
"""


def toc_pages(book: Book) -> dict[str, str]:
    """Every generated page, by its path relative to the book's source folder."""
    pages = {"index.md": landing_page(book), "papers.md": papers_index(book)}
    for chapter in book.chapters:
        pages[f"{chapter_docname(chapter)}.md"] = chapter_page(chapter)
        if _has_exercises(chapter):
            pages[f"{_exercise_docname(chapter)}.md"] = exercises_page(chapter)
    return pages


def write_toc(book: Book, out_dir: Path) -> list[Path]:
    """Write the generated pages (landing, chapters, exercises, papers index) under ``out_dir``."""
    written = []
    for relative, text in toc_pages(book).items():
        path = Path(out_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# ----------------------------------------------------------------------------- assembling and building


def _write_without_widget_state(source: Path, target: Path) -> None:
    """Copy an executed notebook without its ipywidgets state.

    With that state myst-nb would load the widget manager from a CDN, so the page would need the
    network; widgets only work with a live kernel anyway, and every section draws a static figure.
    """
    notebook = nbformat.read(source, as_version=4)
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, target)


def _copy_notebooks(book: Book, out_dir: Path) -> None:
    """Copy each written section's executed notebook, running it first when missing or stale."""
    from lib import notebooks

    for chapter in book.chapters:
        for section in (s for s in chapter.sections if s.written):
            try:
                timing = notebooks.build_section(section)
            except notebooks.NotebookError as err:
                raise HtmlBookError(str(err)) from None
            print(timing.line(), flush=True)
            _write_without_widget_state(notebooks.executed_path(section), out_dir / f"{section_docname(section, chapter)}.ipynb")


def _copy_exercises(book: Book, out_dir: Path) -> None:
    for chapter in book.chapters:
        if chapter.exercise_file.is_file():
            target = out_dir / _exercise_file(chapter)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(chapter.exercise_file, target)


def assemble(book: Book, out_dir: Path = SOURCE_DIR) -> Path:
    """Recreate the Sphinx source tree under ``out_dir``: generated pages, notebooks, exercises."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    write_toc(book, out_dir)
    _copy_notebooks(book, out_dir)
    _copy_exercises(book, out_dir)
    return out_dir


def run_sphinx(src_dir: Path = SOURCE_DIR, out_dir: Path = HTML_DIR, doctree_dir: Path = DOCTREE_DIR) -> Path:
    """Build HTML from ``src_dir`` with warnings as errors; return the path of ``index.html``."""
    from sphinx.cmd.build import build_main

    args = ["-b", "html", "-E", "-q", "-W", "--keep-going",
            "-c", str(CONF_DIR), "-d", str(doctree_dir), str(src_dir), str(out_dir)]
    if build_main(args) != 0:
        raise HtmlBookError(f"sphinx-build failed on {src_dir} (its warnings, fatal here, are printed above)")
    return Path(out_dir) / "index.html"


def build(book: Book | None = None, out_dir: Path = HTML_DIR) -> Path:
    """Assemble the source tree and build the HTML book; return the path of ``index.html``."""
    book = book or load_book()
    return run_sphinx(assemble(book), out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.htmlbook", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="execute stale notebooks, assemble _build/book_src and build _build/html")
    parser.parse_args(argv)
    start = time.perf_counter()
    try:
        index = build()
    except HtmlBookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"built in {time.perf_counter() - start:.0f} s: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
