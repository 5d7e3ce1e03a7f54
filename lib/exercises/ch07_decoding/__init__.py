"""Checks for chapter 07 (faster decoding), one module per section.

Importing this package registers every chapter-07 exercise: each module below decorates its
checkers with :func:`lib.exercises.register`. The student file is ``exercises/07_decoding.py``,
generated from ``solutions/07_decoding.py``.
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    importlib.import_module(f"{__name__}.{_info.name}")
