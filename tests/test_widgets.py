"""lib.widgets: sliders only where someone can move them."""

import pytest

from lib import widgets
from lib.notebooks import kernel_env


def test_headless_runs_draw_no_widget(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setenv(widgets.HEADLESS_ENV, "1")
    widgets.explore(lambda x=1: calls.append(x), x=(0, 3))
    assert calls == []  # interact would have called the function once with the default


def test_live_kernel_gets_interact(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.delenv(widgets.HEADLESS_ENV, raising=False)
    widgets.explore(lambda x=1: calls.append(x), x=(0, 3))
    assert calls == [1]  # interact draws once with the slider's starting value


def test_the_build_kernel_is_headless() -> None:
    assert kernel_env()[widgets.HEADLESS_ENV] == "1"


def test_explore_names_a_bad_function() -> None:
    with pytest.raises(TypeError, match="function must be callable"):
        widgets.explore(3)
