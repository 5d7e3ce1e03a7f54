"""Exercises: every check passes on its solution and fails on its stub; the generator is faithful."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import yaml

from lib.exercises import EXERCISES, CheckFailed, check, register
from lib.exercises.__main__ import main as exercises_main
from lib.exercises.generate import (
    MarkerError, chapter_of, definitions, exercise_path, find_spans, make_exercise, masters,
)

ROOT = Path(__file__).resolve().parents[1]


def _master_of(exercise_id: str) -> Path:
    chapter = EXERCISES[exercise_id].chapter
    (path,) = [p for p in masters(ROOT) if chapter_of(p) == chapter]
    return path


# ---------------------------------------------------------------- the registry
def test_registry_matches_book_yml():
    book = yaml.safe_load((ROOT / "book.yml").read_text(encoding="utf-8"))
    listed = {i for ch in book["chapters"] for s in ch["sections"] for i in s.get("exercises") or []}
    assert listed <= set(EXERCISES), f"in book.yml but not registered: {sorted(listed - set(EXERCISES))}"
    assert set(EXERCISES) <= listed, f"registered but not in book.yml: {sorted(set(EXERCISES) - listed)}"
    for exercise in EXERCISES.values():
        assert exercise.id.startswith(exercise.section) and exercise.points > 0 and exercise.summary


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_check_passes_on_the_solution(exercise_id, capsys):
    exercise = EXERCISES[exercise_id]
    solution = definitions(_master_of(exercise_id))[exercise.function]
    check(exercise_id, solution)
    assert capsys.readouterr().out.startswith(f"✓ {exercise_id} {exercise.function}: all ")


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_check_fails_on_the_stub(exercise_id):
    exercise = EXERCISES[exercise_id]
    stub = definitions(exercise_path(ROOT, _master_of(exercise_id)))[exercise.function]
    with pytest.raises(NotImplementedError, match=f"^Exercise {exercise_id}: "):
        check(exercise_id, stub)


def test_check_rejects_unknown_ids_and_non_functions():
    with pytest.raises(ValueError, match=r"unknown exercise '99.9z'; known ids: 00.1a, 00.1b"):
        check("99.9z", print)
    with pytest.raises(TypeError, match=r"check\(fn\): expected the function softmax_rows .* got a int"):
        check("00.1a", 3)


@pytest.mark.parametrize(
    ("exercise_id", "options"),
    [("0.1a", {}), ("00.1", {}), ("00.1a", {}), ("00.9z", {"points": 0}), ("00.9z", {"function": "not valid"})],
)
def test_register_rejects_bad_exercises(exercise_id, options):
    arguments = {"function": "some_function", "points": 1, "summary": "something"} | options
    with pytest.raises(ValueError, match=r"^register\("):
        register(exercise_id, **arguments)(lambda fn: 1)
    assert "00.9z" not in EXERCISES


# ---------------------------------------------------------------- checks catch typical mistakes
def _naive_softmax(x):
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _float32_softmax(x):
    return definitions(ROOT / "solutions/00_method.py")["softmax_rows"](x).astype(np.float32)


def _first_axis_softmax(x):
    return definitions(ROOT / "solutions/00_method.py")["softmax_rows"](x.T).T


def _backward_wrong_sign(y, dy):
    return y * (dy + np.sum(y * dy, axis=-1, keepdims=True))


def _update_without_guard(m, l, block):
    m_new = np.maximum(m, block.max(axis=-1))
    return m_new, l * np.exp(m - m_new) + np.exp(block - m_new[:, None]).sum(axis=-1)


def _update_returning_one_array(m, l, block):
    return np.maximum(m, block.max(axis=-1))


def _merge_without_guard(m_a, l_a, m_b, l_b):
    m = np.maximum(m_a, m_b)
    return m, l_a * np.exp(m_a - m) + l_b * np.exp(m_b - m)


def _step_without_guard(m, l, acc, s_tile, v_tile):
    m_new = np.maximum(m, s_tile.max(axis=-1))
    alpha, p = np.exp(m - m_new), np.exp(s_tile - m_new[:, None])
    return m_new, alpha * l + p.sum(axis=-1), alpha[:, None] * acc + p @ v_tile


def _step_without_rescaling_acc(m, l, acc, s_tile, v_tile):
    m_new = np.maximum(m, s_tile.max(axis=-1))
    shift = np.where(np.isneginf(m_new), 0.0, m_new)
    alpha, p = np.exp(m - shift), np.exp(s_tile - shift[:, None])
    return m_new, alpha * l + p.sum(axis=-1), acc + p @ v_tile


def _shift_by_the_maximum(s_tile, m_prev, beta, tau):
    return np.maximum(s_tile.max(axis=-1), m_prev)


def _shift_forgetting_the_previous(s_tile, m_prev, beta, tau):
    m = s_tile.max(axis=-1)
    tied = ((s_tile >= (m - tau)[:, None]).sum(axis=-1) >= 2) & np.isfinite(m)
    return np.where(tied & (m > 0), beta * m, np.where(tied & (m < 0), 0.0, m))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the mistakes overflow on purpose
@pytest.mark.parametrize(
    ("exercise_id", "wrong", "message"),
    [
        ("00.1a", _naive_softmax, r"case 4 of 6 — logits near ±1e4.*NaN/inf"),
        ("00.1a", _float32_softmax, r"case 1 of 6 .*dtype float32, expected float64"),
        ("00.1a", _first_axis_softmax, r"case 1 of 6 .*disagrees"),
        ("00.1b", _backward_wrong_sign, r"case 1 of 6 .*disagrees"),
        ("00.2a", _update_without_guard, r"row 0 all -inf.*after block 1"),
        ("00.2a", _update_returning_one_array, r"should return a pair \(m, l\), got a ndarray"),
        ("00.2b", _merge_without_guard, r"case 4 of 4 — an empty state"),
        ("01.1a", _step_without_guard, r"case 4 of 5 — row 0 all -inf.*after tile 1 .*NaN"),
        ("01.1a", _step_without_rescaling_acc, r"case 1 of 5 .*after tile 2 .*acc: disagrees"),
        ("01.2a", _shift_by_the_maximum, r"case 1 of 6 — ties at a positive maximum.*the shift: disagrees"),
        ("01.2a", _shift_forgetting_the_previous, r"case 5 of 6 .*the shift: disagrees"),
    ],
)
def test_checks_catch_typical_mistakes(exercise_id, wrong, message):
    with pytest.raises(AssertionError, match=message):
        check(exercise_id, wrong)


def test_checks_give_the_student_fresh_inputs():
    """A correct softmax that scribbles over its input must still pass: the checker keeps its own copy."""
    solution = definitions(ROOT / "solutions/00_method.py")["softmax_rows"]

    def softmax_in_place(x):
        result = solution(x)
        x[...] = np.nan
        return result

    check("00.1a", softmax_in_place)


def test_checker_failures_are_check_failed():
    with pytest.raises(CheckFailed):
        EXERCISES["00.1b"].checker(_backward_wrong_sign)


# ---------------------------------------------------------------- the generator
@pytest.mark.parametrize("master", masters(ROOT), ids=lambda p: p.name)
def test_committed_exercise_file_is_what_the_generator_makes(master):
    generated = make_exercise(master.read_text(encoding="utf-8"), f"solutions/{master.name}", chapter_of(master))
    committed = exercise_path(ROOT, master)
    assert committed.exists(), f"{committed} is missing; run `python -m lib.exercises generate`"
    assert committed.read_text(encoding="utf-8") == generated, (
        f"{committed.name} is stale; run `python -m lib.exercises generate`"
    )
    ast.parse(generated)
    assert "BEGIN SOLUTION" not in generated and generated.startswith(f"# Generated from solutions/{master.name}")


def test_generate_check_command_passes_on_the_repository(capsys):
    assert exercises_main(["generate", "--check"]) == 0


MASTER = '''\
# %%
import numpy as np


# %%
def softmax_rows(x):
    """Kept."""
    # BEGIN SOLUTION
    return x
    # END SOLUTION


class Helper:
    def method(self):
        if True:
            # BEGIN SOLUTION
            return 1
            # END SOLUTION


# BEGIN SOLUTION
answer = 42
# END SOLUTION
'''


def test_spans_become_stubs_at_their_indentation():
    text = make_exercise(MASTER, "solutions/00_method.py", "00")
    assert '    """Kept."""\n    raise NotImplementedError("Exercise 00.1a: write the body of softmax_rows")\n' in text
    stub = 'raise NotImplementedError("Exercise (chapter 00): replace this line with your code")'
    assert f"\n            {stub}\n" in text
    assert '\nraise NotImplementedError("Exercise (chapter 00): replace this line with your code")\n' in text
    assert "return x" not in text and "answer = 42" not in text
    ast.parse(text)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["x = 1", "# BEGIN SOLUTION", "y = 2"], r"^m.py:2: '# BEGIN SOLUTION' is never closed"),
        (["x = 1", "# END SOLUTION"], r"^m.py:2: '# END SOLUTION' without a '# BEGIN SOLUTION'"),
        (["# BEGIN SOLUTION", "  # BEGIN SOLUTION", "# END SOLUTION"], r"^m.py:2: .* at line 1 \(spans cannot nest\)"),
        (["# BEGIN SOLUTION 00.1a", "# END SOLUTION"], r"^m.py:1: a marker must be alone on its line"),
        (["x = 1  # BEGIN SOLUTION", "# END SOLUTION"], r"^m.py:1: marker text must start the line"),
        (["x = 1"], r"^m.py: no '# BEGIN SOLUTION'"),
    ],
)
def test_marker_errors_name_file_and_line(lines, message):
    with pytest.raises(MarkerError, match=message):
        find_spans(lines, "m.py")


def _scratch_repo(tmp_path: Path, master_text: str) -> Path:
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "00_method.py").write_text(master_text, encoding="utf-8")
    return tmp_path


def test_generate_check_names_a_stale_file(tmp_path, capsys):
    root = _scratch_repo(tmp_path, MASTER)
    assert exercises_main(["generate", "--check", "--root", str(root)]) == 1
    assert "exercises/00_method.py is not what the generator makes" in capsys.readouterr().err
    assert exercises_main(["generate", "--root", str(root)]) == 0
    assert exercises_main(["generate", "--check", "--root", str(root)]) == 0


def test_generate_reports_marker_errors_in_one_line(tmp_path, capsys):
    root = _scratch_repo(tmp_path, "# %%\n# BEGIN SOLUTION\nx = 1\n")
    assert exercises_main(["generate", "--root", str(root)]) == 1
    expected = "error: solutions/00_method.py:2: '# BEGIN SOLUTION' is never closed by '# END SOLUTION'\n"
    assert capsys.readouterr().err == expected


def test_generate_writes_student_notebooks(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    root = _scratch_repo(tmp_path, (ROOT / "solutions/00_method.py").read_text(encoding="utf-8"))
    assert exercises_main(["generate", "--ipynb", "--root", str(root)]) == 0
    notebook = nbformat.read(root / "exercises/00_method.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert code.count("raise NotImplementedError") == len([e for e in EXERCISES.values() if e.chapter == "00"])
    assert "BEGIN SOLUTION" not in code and notebook.metadata["kernelspec"]["name"] == "python3"
