"""Sliders for a figure, live in JupyterLab and left out of headless runs.

The book build and nbval execute notebooks without a browser. There, ``ipywidgets.interact`` can
block the cell until the client's timeout (jupyter/nbclient#312: the executing client waits on the
shell channel while the widget's messages queue), which is how a 0.2 s cell once took the whole
60 s budget in CI. Those runs set ``BOOK_HEADLESS=1`` and get no sliders: the figure drawn with the
default arguments just above the call is what the static book shows anyway.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

HEADLESS_ENV = "BOOK_HEADLESS"


def headless() -> bool:
    """True in the book build and nbval (``BOOK_HEADLESS=1``), where no one can move a slider."""
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0")


def explore(function: Callable[..., Any], **controls: Any) -> None:
    """``ipywidgets.interact(function, **controls)`` in a live notebook; nothing when :func:`headless`."""
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    if headless():
        return
    from ipywidgets import interact  # deferred: only a live notebook needs it

    interact(function, **controls)
