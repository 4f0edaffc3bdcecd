"""`distill.generate` in a Jupyter kernel: progress on by default, in a display that works there.

A kernel is simulated the way distill and rich detect one: `ipykernel` in `sys.modules` (what
`distill.api` looks for), a `get_ipython()` builtin returning a `ZMQInteractiveShell` (what rich
looks for), stderr that is no terminal, and the call made from inside a running event loop, as
a cell's code is. rich draws a notebook's live bars in an ipywidgets `Output`; without
ipywidgets it warns and shows nothing, so distill writes plain text progress there instead.
"""

from __future__ import annotations

import asyncio
import builtins
import sys
import types
import warnings
from pathlib import Path

import pytest
from rich.console import Console
from servers import StubUpstream

import distill
import distill.io.progress as progress
from distill.api import _interactive

pytest.importorskip("openai")

QUESTIONS = ["How do I reset my router?", "Why is my Wi-Fi slow?", "What is WPA3?"]


class ZMQInteractiveShell:
    """Named as IPython's kernel shell is: rich tells a notebook from a terminal by this name."""


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(builtins, "get_ipython", ZMQInteractiveShell, raising=False)
    return monkeypatch


def without_widgets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` raises ImportError


def with_widgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the two names rich imports to draw in a notebook (only imported here)."""
    ipython, display, widgets = (types.ModuleType(n) for n in ("IPython", "IPython.display", "ipywidgets"))
    display.display = lambda *a, **k: None  # type: ignore[attr-defined]
    ipython.display = display  # type: ignore[attr-defined]
    widgets.Output = object  # type: ignore[attr-defined]
    for module in (ipython, display, widgets):
        monkeypatch.setitem(sys.modules, module.__name__, module)


def test_the_console_is_richs_notebook_display_only_where_it_can_draw(kernel):
    without_widgets(kernel)
    assert progress.widgets_missing()
    plain = progress.progress_console()
    assert not plain.is_jupyter and not plain.is_terminal and plain.color_system is None
    assert plain.width == Console(force_jupyter=True).width  # a cell is as wide as rich would draw it
    with_widgets(kernel)
    assert not progress.widgets_missing()
    assert progress.progress_console().is_jupyter


def test_outside_a_notebook_the_console_is_unchanged(monkeypatch):
    monkeypatch.delattr(builtins, "get_ipython", raising=False)
    assert not progress.widgets_missing()
    assert not progress.progress_console().is_jupyter


def test_generate_in_a_cell_without_ipywidgets_shows_plain_text_progress(kernel, tmp_path: Path, capsys):
    without_widgets(kernel)
    kernel.setattr(progress, "TEXT_EVERY", 0.0)  # a line at every committed batch, not every 30 s
    assert not sys.stderr.isatty() and _interactive(), "a kernel turns progress on by default"

    with StubUpstream(latency=0.01) as upstream:

        async def cell():
            return distill.generate(
                [{"question": q} for q in QUESTIONS],
                teacher={"plugin": "openai", "options": {"model": "distill-tiny", "base_url": upstream.base_url}},
                output=tmp_path / "gen",
                cache=tmp_path / "requests.sqlite",
                license="CC0-1.0",
                batch_size=1,
            )

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            answers = asyncio.run(cell())

    assert answers.num_rows == len(QUESTIONS) and upstream.answered == len(QUESTIONS)
    assert not [w for w in caught if "ipywidgets" in str(w.message)], "rich's notebook display was used"
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err, f"terminal control codes in a notebook's stderr: {err!r}"
    lines = [line for line in err.splitlines() if line.startswith("generate")]
    # One line per committed batch while it runs, then the finished bar.
    assert [line.split()[2] for line in lines] == ["1/3", "2/3", "3/3", "3/3"], err
    assert "100%" in lines[-1]
    assert any(line.startswith("seeds") for line in err.splitlines()), err
