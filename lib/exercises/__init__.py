"""The book's exercises: a registry of checks, ``check()`` for notebooks, and the stub generator.

In an exercise notebook::

    from lib.exercises import check
    check("00.1a", softmax_rows)      # ✓ 00.1a softmax_rows: all 6 cases pass

Every chapter module ``lib/exercises/chNN_slug.py`` registers its exercises with
:func:`register`; importing this package imports all of them, so :data:`EXERCISES` is complete.
``python -m lib.exercises generate`` turns the masters in ``solutions/`` into ``exercises/``
(see :mod:`lib.exercises.generate`).
"""

from __future__ import annotations

import importlib
import pkgutil

from lib.exercises.registry import EXERCISES, CheckFailed, Exercise, check, get_exercise, register

__all__ = ["EXERCISES", "CheckFailed", "Exercise", "chapter_modules", "check", "get_exercise", "register"]


def chapter_modules() -> list[str]:
    """Dotted names of the chapter check modules in this package: ``lib.exercises.chNN_*``."""
    return sorted(f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__) if info.name.startswith("ch"))


for _module in chapter_modules():
    importlib.import_module(_module)
