"""book.yml is the one source of what the book contains: it must load, validate and report truly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.book import N_PAPERS, section_status, validate
from lib.bookmodel import BOOK_FILE, ROOT, BookError, load_book


@pytest.fixture
def raw() -> dict:
    """A fresh copy of the committed book for each test to break."""
    return yaml.safe_load(BOOK_FILE.read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "book.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def _errors(tmp_path, data) -> list[str]:
    return validate(load_book(_write(tmp_path, data)))


def test_the_committed_book_is_valid_and_complete():
    book = load_book()
    assert validate(book) == []
    assert [c.id for c in book.chapters] == [f"{i:02d}" for i in range(22)]
    assert sorted(s.paper.n for s in book.sections if s.paper) == list(range(1, N_PAPERS + 1))


def test_the_book_follows_the_syllabus_outline_in_order():
    outline = ROOT.parent / "shared" / "syllabus" / "outline.json"
    if not outline.is_file():
        pytest.skip("the shared syllabus is not beside this checkout")
    expected = [(s["id"], s["paper"]["arxiv"]) for ch in json.loads(outline.read_text()) for s in ch["sections"]]
    book = load_book()
    assert [(s.id, s.paper.arxiv) for s in book.sections if s.paper] == expected


def test_chapter_00_is_complete():
    for s in load_book().chapter("00").sections:
        assert section_status(s).complete, s.id


def test_missing_key_names_the_section(tmp_path, raw):
    del raw["chapters"][1]["sections"][2]["budget_s"]
    with pytest.raises(BookError, match=r"chapter 01, section #3: missing key\(s\) budget_s"):
        load_book(_write(tmp_path, raw))


def test_not_yaml_and_wrong_top_level(tmp_path):
    bad = tmp_path / "book.yml"
    bad.write_text("chapters: [unclosed")
    with pytest.raises(BookError, match="not valid YAML"):
        load_book(bad)
    bad.write_text("sections: []")
    with pytest.raises(BookError, match="top-level key 'chapters'"):
        load_book(bad)
    with pytest.raises(BookError, match="file not found"):
        load_book(tmp_path / "absent.yml")


def test_duplicate_paper_and_missing_paper_are_named(tmp_path, raw):
    raw["chapters"][1]["sections"][1]["paper"] = dict(raw["chapters"][1]["sections"][0]["paper"])
    errors = _errors(tmp_path, raw)
    assert any("paper 85 appears 2 times (sections 01.1, 01.2)" in e for e in errors)
    assert any("paper(s) 41 have no section" in e for e in errors)


def test_missing_notebook_and_modules_are_named(tmp_path, raw):
    section = raw["chapters"][1]["sections"][0]
    section.update(notebook="chapters/01_attention/01_flash.py", lib=["lib.nope"], tests=["tests/test_nope.py"],
                   reference=["lib.softmax.nope"], data="x")
    errors = _errors(tmp_path, raw)
    assert "book.yml: section 01.1: notebook: chapters/01_attention/01_flash.py does not exist" in errors
    assert "book.yml: section 01.1: lib: module lib.nope does not exist" in errors
    assert "book.yml: section 01.1: tests: tests/test_nope.py does not exist under tests/" in errors
    assert "book.yml: section 01.1: reference: lib.softmax has no attribute 'nope'" in errors


def test_numbering_budget_and_exercise_ids(tmp_path, raw):
    raw["chapters"][0]["sections"][1]["id"] = "00.3"
    raw["chapters"][0]["sections"][0]["budget_s"] = 90
    raw["chapters"][0]["sections"][0]["exercises"] = ["00.1a", "00.1z", "x"]
    errors = _errors(tmp_path, raw)
    assert 'book.yml: section 00.3: id: expected "00.2" (sections numbered in order)' in errors
    assert any("section 00.1: budget_s: expected 0 < budget_s ≤ 60" in e for e in errors)
    assert "book.yml: section 00.1: exercises: 00.1z: has no check registered in lib.exercises" in errors
    assert any("exercises: x: expected the section id plus a letter" in e for e in errors)
    assert "lib.exercises: exercise 00.1b is registered but no section of book.yml lists it" in errors


def test_cli_validate_status_and_json():
    run = lambda *a: subprocess.run([sys.executable, "-m", "lib.book", *a], capture_output=True, text=True, cwd=ROOT)
    ok = run("validate")
    assert ok.returncode == 0 and "book.yml is valid: 22 chapters, 122 sections" in ok.stdout
    status = run("status")
    assert "chapter 00 The method: 3 of 3 sections complete" in status.stdout
    assert "chapter 01 The attention kernel: 6 of 6 sections complete" in status.stdout
    assert f"paper sections listed: {N_PAPERS} of {N_PAPERS}" in status.stdout
    rows = json.loads(run("status", "--json").stdout)
    assert len(rows) == 122 and rows[0]["id"] == "00.1" and rows[0]["notebook"] is True


def test_cli_toc_writes_the_contents_and_the_papers_index(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lib.book", "toc", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    papers = (tmp_path / "papers.md").read_text()
    assert papers.count("https://arxiv.org/abs/") == N_PAPERS
    assert "[2307.08691](https://arxiv.org/abs/2307.08691)" in papers  # FlashAttention-2 → section 01.1
    assert (tmp_path / "chapters" / "00_method" / "index.md").is_file()


def test_cli_reports_a_malformed_book_in_one_line(tmp_path):
    bad = tmp_path / "book.yml"
    bad.write_text("chapters: 3\n")
    out = subprocess.run([sys.executable, "-m", "lib.book", "--book", str(bad), "validate"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and out.stderr.strip().count("\n") == 0 and "chapters" in out.stderr
