"""Show library source inside a notebook, so what the reader sees is exactly what ships.

``show(obj)`` renders the source of a function, class or module from ``lib`` or ``kernels``
with syntax highlighting when running under IPython and as plain text otherwise (tests, scripts).
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["show", "source_of"]


def source_of(obj: Any) -> str:
    """Return the source text of ``obj`` (function, class, method, module or Triton kernel).

    Triton's ``@triton.jit`` wraps the Python function; its ``.fn`` attribute holds the original,
    whose source is what a reader wants to see.
    """
    target = getattr(obj, "fn", obj)  # unwrap triton.JITFunction
    try:
        return inspect.getsource(target)
    except (TypeError, OSError) as err:
        raise TypeError(
            f"show(obj): expected a function, class or module defined in a source file, "
            f"got {type(obj).__name__} ({err})"
        ) from None


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def show(obj: Any) -> None:
    """Display the source of ``obj``: highlighted Markdown in a notebook, plain text elsewhere."""
    text = source_of(obj)
    if _in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{text}```"))
    else:
        print(text, end="" if text.endswith("\n") else "\n")
