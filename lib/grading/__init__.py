"""The grader: ``python -m lib.grading SUBMISSIONS_DIR --out OUT_DIR`` grades a folder of notebooks.

Every ``.ipynb`` (and jupytext percent ``.py``) directly inside SUBMISSIONS_DIR is one student,
named by its file stem. Each runs in its own subprocess with a wall-clock limit (``--timeout``,
per attempt) and an address-space limit (``--memory-mb``, ``RLIMIT_AS``, set before anything is
imported; torch imports in well under 1 GB). Inside, the code cells run one by one in one
namespace, each under ``--cell-timeout``; a cell that raises, does not compile or runs too long
is recorded and skipped. Then the grader itself calls every exercise's checker from
:mod:`lib.exercises` on the student's function of that name, each under ``--check-timeout``.
Printed output is logged to ``OUT_DIR/logs/STUDENT.log`` and never read.

Results travel back as JSON lines, written as each step finishes, so a killed process (hang,
memory, segfault) keeps what it had reported; the cell or check that was running is charged and
the submission rerun without it, up to ``--attempts`` runs. Statuses per exercise: passed,
failed (the checker found wrong results), error (the function, or the notebook, raised or
crashed), missing (no such function), timeout.

Which exercises: ``--chapter NN`` grades that chapter's. Without it, the grader grades every
chapter at least one submission defines an exercise function of (by the names bound at the top
level of its cells), and every registered exercise when none does.

Outputs: ``OUT_DIR/gradebook.csv`` (student, points per exercise, total, max) and
``OUT_DIR/report.json`` (per student and exercise: status, points, message; cell errors; runs).

Not a sandbox: student code runs with the grader's user rights and can read files, open sockets
or tamper with its own grading process. Run untrusted submissions in a container.
"""

from lib.grading.runner import Limits, Outcome, StudentResult, Submission, grade_all, grade_submission

__all__ = ["Limits", "Outcome", "StudentResult", "Submission", "grade_all", "grade_submission"]
