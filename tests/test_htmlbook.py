"""The HTML book: the generated pages (fast), and one real Sphinx build checked page by page (slow)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lib import htmlbook
from lib.bookmodel import Book, Chapter, Paper, Section, load_book

# Sphinx 9 flags the theme's and myst's use of a deprecated attribute; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*Check CHANGES for Sphinx API modifications")

BOOK = load_book()
PAPERS = [s.paper for s in BOOK.sections if s.paper is not None]


def _section(section_id: str, notebook: str | None, paper: Paper | None, exercises: tuple[str, ...] = ()) -> Section:
    return Section(section_id, f"Title of {section_id}", paper, notebook, (), (), (), (), exercises, None, 60, "98")


TINY = Book((
    Chapter("98", "tiny", "A tiny chapter", None, (
        _section("98.1", "chapters/98_tiny/01_first.py", None, ("98.1a",)),
        _section("98.2", None, Paper(7, "A *starred* title_with | pipes", "2401.00007", 2024)),
        _section("98.3", "chapters/98_tiny/03_third.py", Paper(3, "Third", "2301.00003", 2023)),
    )),
))
TINY_CHAPTER = TINY.chapters[0]


# ----------------------------------------------------------------------------- generated pages


def test_chapter_page_lists_sections_in_order_linking_the_written_ones() -> None:
    page = htmlbook.chapter_page(TINY_CHAPTER)
    items = [line for line in page.splitlines() if re.match(r"\d+\. ", line)]
    assert items == [
        "1. **98.1** [Title of 98.1](01_first.ipynb)",
        "2. **98.2** Title of 98.2 — *not yet written* · A \\*starred\\* title\\_with \\| pipes "
        "([arXiv 2401.00007](https://arxiv.org/abs/2401.00007), 2024)",
        "3. **98.3** [Title of 98.3](03_third.ipynb) · Third ([arXiv 2301.00003](https://arxiv.org/abs/2301.00003), 2023)",
    ]
    assert page.startswith("# 98 · A tiny chapter\n")
    assert "```{toctree}\n:hidden:\n:maxdepth: 1\n\n01_first\n03_third\nexercises\n```" in page


def test_papers_index_is_one_row_per_paper_by_number() -> None:
    rows = [line for line in htmlbook.papers_index(TINY).splitlines() if re.match(r"\| \d", line)]
    assert rows == [
        "| 3 | [2301.00003](https://arxiv.org/abs/2301.00003) | Third | 2023 | [98.3](chapters/98_tiny/03_third.ipynb) |",
        "| 7 | [2401.00007](https://arxiv.org/abs/2401.00007) | A \\*starred\\* title\\_with \\| pipes | 2024 | 98.2 |",
    ]


def test_exercises_page_names_the_file_and_each_sections_exercises() -> None:
    page = htmlbook.exercises_page(TINY_CHAPTER)
    assert "`exercises/98_tiny.py` is *not yet written*" in page
    assert "- **98.1** Title of 98.1: 98.1a" in page
    assert "98.2" not in page


def test_the_real_books_papers_index_has_all_119_papers() -> None:
    index = htmlbook.papers_index(BOOK)
    rows = [line for line in index.splitlines() if re.match(r"\| \d", line)]
    assert len(PAPERS) == 119
    assert [int(row.split("|")[1]) for row in rows] == sorted(p.n for p in PAPERS)
    for paper in PAPERS:
        assert f"[{paper.arxiv}](https://arxiv.org/abs/{paper.arxiv})" in index, paper


def test_the_real_books_chapter_pages_list_every_section() -> None:
    for chapter in BOOK.chapters:
        page = htmlbook.chapter_page(chapter)
        ids = re.findall(r"^\d+\. \*\*(\d\d\.\d+)\*\*", page, flags=re.MULTILINE)
        assert ids == [s.id for s in chapter.sections], chapter.id
        assert page.count("*not yet written*") == sum(not s.written for s in chapter.sections)


def test_landing_page_links_every_chapter_and_the_papers_index() -> None:
    page = htmlbook.landing_page(BOOK)
    for chapter in BOOK.chapters:
        assert f"\n{htmlbook.chapter_docname(chapter)}\n" in page
    assert ":caption: Reference\n:maxdepth: 1\n\npapers\n" in page
    assert f"{len(BOOK.chapters)} chapters and {len(BOOK.sections)} sections covering 119 papers" in page


def test_write_toc_writes_every_generated_page(tmp_path: Path) -> None:
    paths = htmlbook.write_toc(BOOK, tmp_path)
    expected = {"index.md", "papers.md"} | {f"chapters/{c.dirname}/index.md" for c in BOOK.chapters} | {
        f"chapters/{c.dirname}/exercises.md" for c in BOOK.chapters if any(s.exercises for s in c.sections)
    }
    assert {p.relative_to(tmp_path).as_posix() for p in paths} == expected
    assert all(p.is_file() for p in paths)


def test_md_escape_leaves_plain_text_alone() -> None:
    assert htmlbook.md_escape("Scaling laws: 1–10 B, 2024?") == "Scaling laws: 1–10 B, 2024?"
    assert htmlbook.md_escape("a_b*c`d$e[f]") == "a\\_b\\*c\\`d\\$e\\[f\\]"


def test_an_unwritten_section_has_no_page() -> None:
    with pytest.raises(htmlbook.HtmlBookError, match=r"^section 98\.2: not written yet, so it has no page$"):
        htmlbook.section_docname(TINY_CHAPTER.sections[1], TINY_CHAPTER)


# ----------------------------------------------------------------------------- the built book


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real book, built once into a temporary folder (notebooks executed first when stale)."""
    root = tmp_path_factory.mktemp("book")
    source = htmlbook.assemble(BOOK, root / "src")
    index = htmlbook.run_sphinx(source, root / "html", root / "doctrees")
    assert index.is_file()
    return index.parent


@pytest.mark.slow
def test_section_page_shows_verdicts_and_figures(html: Path) -> None:
    section = BOOK.section("00.1")
    chapter = BOOK.chapter(section.chapter_id)
    page = (html / f"{htmlbook.section_docname(section, chapter)}.html").read_text(encoding="utf-8")
    verdict = r"✓ [^<\n]+: max abs \d(\.\d+)?e[-+]\d+, rel RMS \d(\.\d+)?e[-+]\d+ ≤ atol"
    assert re.search(verdict, page), "no verdict line of lib.agree on the 00.1 page"
    assert re.search(r"<img [^>]*src=\"[^\"]+\.png\"", page), "no embedded figure on the 00.1 page"


@pytest.mark.slow
def test_papers_page_links_every_paper_to_arxiv(html: Path) -> None:
    page = (html / "papers.html").read_text(encoding="utf-8")
    links = set(re.findall(r'href="https://arxiv\.org/abs/([^"]+)"', page))
    assert links == {p.arxiv for p in PAPERS}
    assert len(links) == 119


@pytest.mark.slow
def test_chapter_pages_list_every_section(html: Path) -> None:
    for chapter in BOOK.chapters:
        page = (html / f"{htmlbook.chapter_docname(chapter)}.html").read_text(encoding="utf-8")
        listed = re.findall(r"<strong>(\d\d\.\d+)</strong>", page)
        assert listed == [s.id for s in chapter.sections], chapter.id


@pytest.mark.slow
def test_pages_load_no_script_from_the_network(html: Path) -> None:
    """The book reads offline: MathJax is local and widget state (a CDN widget manager) is dropped."""
    remote = [p.name for p in html.rglob("*.html") if re.search(r'<script[^>]+src="https?://', p.read_text(encoding="utf-8"))]
    assert not remote, f"pages that load scripts from the network: {remote}"
