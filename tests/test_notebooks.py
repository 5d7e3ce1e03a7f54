"""The notebooks: percent format that round-trips, the section skeleton, the time budget, and errors.

nbval (``pytest --nbval-lax`` on the executed ``.ipynb``) runs from the Makefile, not from here.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import jupytext
import nbformat
import pytest

from lib import notebooks
from lib.bookmodel import Book, Chapter, Section, load_book

BOOK = load_book()
WRITTEN = [s for s in BOOK.sections if s.written]
by_section = pytest.mark.parametrize("section", WRITTEN, ids=[s.id for s in WRITTEN])

GOOD_NOTEBOOK = """\
# %% [markdown]
# # 99.1 A small section
#
# ## Idea
#
# $y = 2x$.

# %%
x = 21

# %% [markdown]
# ## 2. NumPy reference
#
# ### Shapes

# %%
y = 2 * x

# %% [markdown]
# ## The optimized implementation
#
# ## Agreement: one number

# %%
# NBVAL_CHECK_OUTPUT
print("✓ doubling:", y)

# %% [markdown]
# ## Experiment
#
# ## Benchmark
#
# ## Exercises
#
# ```python
# # not a heading
# ```
"""


def _fake_section(notebook: Path | str, section_id: str = "99.1", budget_s: float = 60) -> Section:
    return Section(section_id, "A small section", None, str(notebook), (), (), (), (), (), None, budget_s, "99")


def _skeleton(text: str) -> list[str]:
    return notebooks.skeleton_problems(jupytext.reads(text, fmt="py:percent"))


# ----------------------------------------------------------------------------- every written section


@by_section
def test_notebook_is_percent_format_and_round_trips(section: Section) -> None:
    text = notebooks.source_path(section).read_text(encoding="utf-8")
    name, _ = jupytext.formats.guess_format(text, ".py")
    assert name == "percent", f"section {section.id}: {section.notebook} is {name} format, expected percent ('# %%' cells)"
    config = notebooks.jupytext_config()
    ipynb = jupytext.writes(jupytext.reads(text, fmt="py:percent", config=config), fmt="ipynb")
    back = jupytext.writes(jupytext.reads(ipynb, fmt="ipynb"), fmt="py:percent", config=config)
    diff = "".join(difflib.unified_diff(text.splitlines(True), back.splitlines(True), "committed", "round trip", n=1))
    assert back == text, f"section {section.id}: {section.notebook} changes when paired through .ipynb:\n{diff}"


@by_section
def test_notebook_follows_the_skeleton(section: Section) -> None:
    problems = notebooks.skeleton_problems(notebooks.read_source(notebooks.source_path(section)))
    assert not problems, f"section {section.id}: {section.notebook}: " + "; ".join(problems)


@pytest.mark.slow
@by_section
def test_notebook_runs_within_its_budget(section: Section) -> None:
    timing = notebooks.build_section(section)
    assert not timing.over, (
        f"section {section.id}: ran {timing.seconds:.1f} s, over its budget of {timing.budget_s:g} s "
        f"(slowest: cell {timing.slowest_cell}, {timing.slowest_cell_s:.1f} s)"
    )
    assert notebooks.section_timing(section) == dataclasses.replace(timing, cached=True)


# ----------------------------------------------------------------------------- the skeleton check


def test_skeleton_accepts_a_complete_notebook() -> None:
    assert _skeleton(GOOD_NOTEBOOK) == []


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (("# # 99.1 A small section\n#\n", ""), "first cell is not Markdown"),
        (("# ## Experiment\n", "# # Experiment\n"), "exactly one level-1"),
        (("# ### Shapes", "# #### Shapes"), "heading '#### Shapes' skips a level"),
        (("# ## Benchmark\n", ""), "the '## Benchmark' part is missing"),
        (("# ## Idea\n", "# ## The idea\n"), "the '## Idea' part is missing"),
        (("# NBVAL_CHECK_OUTPUT\n", ""), "no code cell starts with '# NBVAL_CHECK_OUTPUT'"),
    ],
    ids=["no-title", "two-titles", "skipped-level", "missing-part", "renamed-part", "no-verdict-cell"],
)
def test_skeleton_names_what_is_wrong(edit: tuple[str, str], problem: str) -> None:
    old, new = edit
    assert old in GOOD_NOTEBOOK
    problems = _skeleton(GOOD_NOTEBOOK.replace(old, new, 1))
    assert any(problem in p for p in problems), problems


def test_out_of_order_parts_are_reported() -> None:
    swapped = GOOD_NOTEBOOK.replace("# ## Experiment\n", "# ## Tmp\n").replace("# ## Benchmark\n", "# ## Experiment\n")
    assert _skeleton(swapped.replace("# ## Tmp\n", "# ## Benchmark\n")) == [
        "the '## Benchmark' part is out of order (parts in order: Idea, NumPy reference, Agreement, Experiment, Benchmark, Exercises)"
    ]


# ----------------------------------------------------------------------------- errors and the cache


def test_missing_notebook_is_a_one_line_error() -> None:
    section = _fake_section("chapters/99_nowhere/01_missing.py")
    with pytest.raises(notebooks.NotebookError, match=r"^section 99\.1: notebook chapters/99_nowhere/01_missing\.py does not exist$"):
        notebooks.build_section(section)


def test_unwritten_section_is_a_one_line_error() -> None:
    with pytest.raises(notebooks.NotebookError, match=r"^section 99\.1: not written yet \(notebook: null in book\.yml\)$"):
        notebooks.source_path(dataclasses.replace(_fake_section("x.py"), notebook=None))


def test_cli_reports_a_missing_notebook_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    book = Book((Chapter("99", "nowhere", "Nowhere", None, (_fake_section("chapters/99_nowhere/01_missing.py"),)),))
    assert notebooks.build(book=book) == 1
    assert "section 99.1: notebook chapters/99_nowhere/01_missing.py does not exist" in capsys.readouterr().out


def test_cli_rejects_an_unknown_section_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert notebooks.main(["build", "99.9"]) == 2
    assert "99.9: not in book.yml" in capsys.readouterr().err


def test_input_hash_follows_the_notebook_source(tmp_path: Path) -> None:
    source = tmp_path / "nb.py"
    source.write_text("# %%\nx = 1\n")
    before = notebooks.input_hash(source)
    assert notebooks.input_hash(source) == before
    source.write_text("# %%\nx = 2\n")
    assert notebooks.input_hash(source) != before


def test_timing_line_says_ok_or_over() -> None:
    timing = notebooks.Timing("00.1", 12.34, 60, "h", "s", 3, 9.0)
    assert timing.line() == "00.1     12.3 s of 60 s  OK"
    over = dataclasses.replace(timing, seconds=61.0, cached=True)
    assert over.line() == "00.1     61.0 s of 60 s  OVER (slowest: cell 3, 9.0 s) (cached)"


@pytest.mark.slow
def test_build_executes_once_then_uses_the_cache(tmp_path: Path) -> None:
    source = tmp_path / "nb.py"
    source.write_text("# %%\nimport os\n\n# %%\nprint(os.getcwd(), os.environ['MPLBACKEND'])\n")
    section = _fake_section(source, budget_s=30)
    first = notebooks.build_section(section, build_dir=tmp_path / "build")
    executed = nbformat.read(notebooks.executed_path(section), as_version=4)
    assert executed.cells[1].outputs[0]["text"] == f"{tmp_path} module://matplotlib_inline.backend_inline\n"
    assert executed.metadata["kernelspec"]["name"] == "python3"
    again = notebooks.build_section(section, build_dir=tmp_path / "build")
    assert again == dataclasses.replace(first, cached=True)
    assert notebooks.section_timing(section, tmp_path / "build") == again


@pytest.mark.slow
def test_a_raising_cell_is_reported_with_its_index(tmp_path: Path) -> None:
    source = tmp_path / "nb.py"
    source.write_text("# %%\nx = 1\n\n# %% [markdown]\n# text\n\n# %%\ny = x / 0\n")
    section = _fake_section(source, budget_s=30)
    with pytest.raises(
        notebooks.NotebookError,
        match=r"^section 99\.1: cell 2 \(`y = x / 0`\) raised ZeroDivisionError: division by zero$",
    ):
        notebooks.build_section(section, build_dir=tmp_path / "build")
    assert notebooks.section_timing(section, tmp_path / "build") is None
    assert notebooks.executed_path(section).is_file()  # kept, to read the error where it happened


@by_section
def test_sliders_go_through_lib_widgets(section: Section) -> None:
    """``ipywidgets.interact`` can block a headless build for a cell's whole budget (jupyter/nbclient#312):
    notebooks call :func:`lib.widgets.explore`, which leaves it out of the build and nbval."""
    text = notebooks.source_path(section).read_text(encoding="utf-8")
    assert "interact(" not in text.replace("explore(", ""), f"{section.id}: use lib.widgets.explore, not interact"
