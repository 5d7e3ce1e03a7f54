"""The grader: real submissions with every kind of failure, graded in subprocesses under limits."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.exercises import EXERCISES
from lib.grading.__main__ import main as grading_main
from lib.grading.notebooks import NotebookError, code_cells, compile_cell, defined_names, student_names
from lib.grading.runner import _fold, _read_events
from lib.grading.selection import chapter_exercises, infer_exercises

FIXTURES = Path(__file__).parent / "fixtures" / "submissions"
KEEP_AS_PERCENT = {"wrong.py"}  # graded as a percent .py; every other source becomes an .ipynb
IDS = ("00.1a", "00.1b", "00.2a", "00.2b")

# student → status of 00.1a, 00.1b, 00.2a, 00.2b
EXPECTED = {
    "correct": ("passed", "passed", "passed", "passed"),
    "wrong": ("failed", "failed", "failed", "passed"),
    "raises": ("error", "passed", "error", "passed"),
    "hangs": ("missing", "timeout", "passed", "passed"),
    "stubborn": ("passed", "passed", "timeout", "passed"),
    "crash": ("passed", "passed", "error", "passed"),
    "syntax_error": ("passed", "missing", "passed", "passed"),
    "missing": ("passed", "missing", "passed", "missing"),
    "fake": ("error", "error", "failed", "failed"),
    "not_a_notebook": ("error", "error", "error", "error"),
}


def _build_submissions(folder: Path) -> None:
    """The fixture folder as students hand it in: .ipynb notebooks, one percent .py, a non-notebook."""
    import jupytext

    folder.mkdir()
    for source in FIXTURES.iterdir():
        if source.suffix == ".py" and source.name not in KEEP_AS_PERCENT:
            jupytext.write(jupytext.read(source), str(folder / f"{source.stem}.ipynb"), fmt="ipynb")
        else:
            shutil.copy(source, folder / source.name)


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the real command line once on the whole fixture folder (≈20 s on 2 cores)."""
    root = tmp_path_factory.mktemp("grading")
    _build_submissions(root / "submissions")
    command = [
        sys.executable, "-m", "lib.grading", str(root / "submissions"), "--out", str(root / "out"),
        "--chapter", "00", "--timeout", "10", "--cell-timeout", "2", "--check-timeout", "2", "--jobs", "2",
    ]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return process, root / "out"


def _report(graded) -> dict:
    return json.loads((graded[1] / "report.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_the_run_completes_and_writes_both_outputs(graded):
    process, out = graded
    assert process.returncode == 0, process.stderr
    assert (out / "gradebook.csv").exists() and (out / "report.json").exists()
    assert set(_report(graded)["students"]) == set(EXPECTED)  # notes.txt is not a submission


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_each_exercise_gets_its_status_and_points(graded, student):
    result = _report(graded)["students"][student]
    statuses = tuple(result["exercises"][i]["status"] for i in IDS)
    assert statuses == EXPECTED[student], {i: result["exercises"][i]["message"] for i in IDS}
    points = [EXERCISES[i].points if s == "passed" else 0 for i, s in zip(IDS, EXPECTED[student])]
    assert [result["exercises"][i]["points"] for i in IDS] == points
    assert result["total"] == sum(points) and result["max"] == sum(EXERCISES[i].points for i in IDS)


@pytest.mark.slow
def test_gradebook_has_one_row_per_student(graded):
    with open(graded[1] / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["student", *IDS, "total", "max"]
    students = _report(graded)["students"]
    for row in rows:
        expected = students[row["student"]]
        assert [int(row[i]) for i in IDS] == [expected["exercises"][i]["points"] for i in IDS]
        assert (int(row["total"]), int(row["max"])) == (expected["total"], expected["max"])
    assert sorted(row["student"] for row in rows) == sorted(EXPECTED)


@pytest.mark.slow
def test_cell_errors_are_recorded_and_cost_only_that_cell(graded):
    students = _report(graded)["students"]
    (syntax,) = students["syntax_error"]["cell_errors"]
    assert (syntax["cell"], syntax["status"]) == (2, "syntax_error")
    assert syntax["first_line"] == "def softmax_backward(y, dy):"
    assert "(code cell 2, line 2)" in syntax["message"]
    memory, exit_ = students["raises"]["cell_errors"]
    assert memory["status"] == "error" and memory["message"].startswith("MemoryError")  # the default 4 GiB limit
    assert exit_["status"] == "error" and exit_["message"].startswith("SystemExit: giving up")
    (loop,) = students["hangs"]["cell_errors"]
    assert loop["status"] == "timeout"
    (segfault,) = students["crash"]["cell_errors"]
    assert segfault["status"] == "crashed" and "SIGSEGV" in segfault["message"]


@pytest.mark.slow
def test_a_killed_process_keeps_earlier_results_and_is_retried(graded):
    students = _report(graded)["students"]
    stubborn = students["stubborn"]
    assert [run["timed_out"] for run in stubborn["runs"]] == [True, False]
    assert "ran past the 10 s limit" in stubborn["exercises"]["00.2a"]["message"]
    crash = students["crash"]
    assert [run["returncode"] for run in crash["runs"]] == [-11, -6, 0]
    assert "SIGABRT" in crash["exercises"]["00.2a"]["message"]


@pytest.mark.slow
def test_messages_explain_what_went_wrong(graded):
    students = _report(graded)["students"]
    message = students["raises"]["exercises"]["00.1a"]["message"]
    assert message.startswith("ZeroDivisionError: division by zero (code cell 1")
    assert students["wrong"]["exercises"]["00.1a"]["message"].startswith("case 4 of 6 — logits near ±1e4")
    message = students["hangs"]["exercises"]["00.1b"]["message"]
    assert message == "softmax_backward did not finish within the 2 s check limit"
    assert students["missing"]["exercises"]["00.1b"]["message"] == "the notebook does not define softmax_backward"
    assert students["not_a_notebook"]["notebook_error"].startswith("not a valid notebook")
    assert students["not_a_notebook"]["runs"] == []


@pytest.mark.slow
def test_printed_claims_are_never_trusted(graded):
    fake = _report(graded)["students"]["fake"]
    assert fake["total"] == 0
    assert fake["exercises"]["00.1a"]["message"].startswith("NotImplementedError: Exercise 00.1a")
    log = (graded[1] / fake["log"]).read_text(encoding="utf-8")
    assert "All tests passed ✓ 10/10" in log  # it printed its claim; the grader only logged it


# ---------------------------------------------------------------- bad input
def test_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert grading_main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: SUBMISSIONS_DIR: ") and "is not a folder" in err


@pytest.mark.parametrize("contents", [[], ["notes.txt", ".hidden.ipynb"]], ids=["empty", "no-notebooks"])
def test_folder_without_notebooks_is_a_one_line_error(tmp_path, capsys, contents):
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("x", encoding="utf-8")
    assert grading_main([str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no .ipynb or .py notebooks" in err
    assert not (tmp_path / "out").exists()


def test_unknown_chapter_is_a_one_line_error(tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.mkdir()
    shutil.copy(FIXTURES / "correct.py", folder)
    assert grading_main([str(folder), "--out", str(tmp_path / "out"), "--chapter", "42"]) == 2
    assert "--chapter: no exercises registered for chapter '42'; chapters with exercises: 00" in capsys.readouterr().err


def test_bad_limits_are_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        grading_main([str(tmp_path), "--out", str(tmp_path), "--timeout", "-1"])
    assert "--timeout: expected a positive float, got '-1'" in capsys.readouterr().err


# ---------------------------------------------------------------- reading notebooks, choosing exercises
def test_percent_py_without_cells_is_not_a_notebook(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("def softmax_rows(x):\n    return x\n", encoding="utf-8")
    with pytest.raises(NotebookError, match="percent-format notebook"):
        code_cells(script)


def test_magics_are_skipped_but_valid_python_is_untouched():
    namespace: dict = {}
    exec(compile_cell("%matplotlib inline\nimport math\n!pip install nothing\nx = 7 % 3", "<c>"), namespace)
    assert namespace["x"] == 1
    assert compile_cell("%%time\nwhile True: pass", "<c>").co_code == compile("", "<c>", "exec").co_code
    with pytest.raises(SyntaxError):
        compile_cell("def f(:\n    pass", "<c>")


def test_chapter_inferred_from_defined_names():
    cells = ["import numpy as np\n%load_ext autoreload", "def softmax_rows(x):\n    return x", "def f(:"]
    assert {"np", "softmax_rows"} <= defined_names(cells)
    assert infer_exercises([cells]) == chapter_exercises("00")
    assert infer_exercises([["x = 1"]]) == [EXERCISES[i] for i in sorted(EXERCISES)]


def test_colliding_stems_keep_their_suffix():
    names = student_names([Path("ann.ipynb"), Path("ann.py"), Path("bob.ipynb")])
    assert list(names.values()) == ["ann.ipynb", "ann.py", "bob"]


def test_torn_forged_and_invalid_event_lines_are_ignored(tmp_path):
    events = tmp_path / "results.jsonl"
    events.write_text(
        '{"event": "ready"}\n{"event": "cell_start", "cell": 1}\n'
        '{"event": "check", "id": "00.1b", "status": "passed"}\n'  # forged from inside a cell
        '{"event": "cell", "cell": 1, "status": "ok"}\n{"event": "check_start", "id": "00.1a"}\n'
        '{"event": "check", "id": "00.1a", "status": "failed", "message": "wrong"}\n'
        '{"event": "check_start", "id": "00.9z"}\n{"event": "check", "id": "00.9z", "status": "passed"}\n'
        '{"event": "check_start", "id": "00.1b"}\n{"event": "check", "id": "00.1b", "status": "perfect"}\n'
        '{"event": "check_start", "id": "00.2a"}\n{"eve',
        encoding="utf-8",
    )
    progress = _fold(_read_events(events), {"00.1a", "00.1b", "00.2a"})
    assert progress.ready and not progress.finished
    assert {i: e["status"] for i, e in progress.checks.items()} == {"00.1a": "failed"}
    assert progress.running == ("check", "00.2a")
