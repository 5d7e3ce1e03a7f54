"""Check for section 07.5 (hybrid decoding): CTC's collapse map, the fast pass's last step.

The student's ``ctc_collapse(ids, blank) -> list[int]`` must equal
:func:`lib.decoding.hybrid.ctc_collapse_ref` (merge runs of equal labels, then drop blanks) on
hand-made cases that separate the plausible wrong orders, and on seeded random label paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from lib.decoding.hybrid import ctc_collapse_ref
from lib.exercises.registry import CheckFailed, register

__all__ = ["check_ctc_collapse", "collapse_cases"]


def collapse_cases() -> Iterator[tuple[str, list[int], int]]:
    """(description, frame labels, blank): hand cases first, then 40 seeded random paths."""
    yield "a run of one label becomes one label", [3, 3, 3], 0
    yield "a blank between equal labels keeps both", [3, 0, 3], 0
    yield "merge first, then drop blanks: a a _ a b b _", [1, 1, 0, 1, 2, 2, 0], 0
    yield "leading and trailing blanks vanish", [0, 0, 5, 0], 0
    yield "only blanks give an empty output", [0, 0, 0], 0
    yield "no frames at all", [], 0
    yield "the blank need not be 0 (here it is 4)", [0, 0, 4, 0, 1, 4, 4, 1], 4
    rng = np.random.default_rng(75)
    for i in range(40):
        vocab = int(rng.integers(2, 8))
        blank = int(rng.integers(0, vocab))
        frames = rng.integers(0, vocab, size=int(rng.integers(1, 30))).tolist()
        yield f"random path {i + 1} (V = {vocab}, blank = {blank})", frames, blank


@register("07.5a", function="ctc_collapse", points=1, summary="CTC's collapse: merge repeated labels, then drop blanks")
def check_ctc_collapse(fn: Callable) -> int:
    """Compare ``fn`` with the reference on every case; return the number of cases passed."""
    cases = list(collapse_cases())
    for i, (what, frames, blank) in enumerate(cases, 1):
        case = f"case {i} of {len(cases)} — {what}: ctc_collapse({frames}, blank={blank})"
        got = fn(list(frames), blank)
        if not isinstance(got, (list, tuple, np.ndarray)):
            raise CheckFailed(f"{case}: expected a list of ints, got {type(got).__name__}")
        got = [int(x) for x in got]
        expected = ctc_collapse_ref(np.array(frames, dtype=np.int64), blank).tolist()
        if got != expected:
            raise CheckFailed(f"{case}: got {got}, expected {expected}")
    return len(cases)
