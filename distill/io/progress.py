"""Progress bars for long work: records done, rate, and time left, on stderr.

In a terminal they are rich's live bars. In a Jupyter kernel rich draws them in an ipywidgets
`Output`; a kernel without ipywidgets gets plain text instead (see `progress_console`), as does
any stderr that is not a terminal: one line per stage when it ends, and one every
`TEXT_EVERY` seconds while it runs, so a long stage is not silent until it finishes.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from distill.io.runlog import LiveStage

if TYPE_CHECKING:
    from distill.cache.calls import CallStats

#: Seconds between the progress lines a stage writes where no live bar can be drawn.
TEXT_EVERY = 30.0


def widgets_missing() -> bool:
    """True in a Jupyter kernel (as rich detects one) that cannot draw rich's live display.

    rich draws a notebook's live display in an ipywidgets `Output`; without ipywidgets it
    only warns 'install "ipywidgets" for Jupyter support' and shows nothing until the stage
    ends, and not even then. Plain text on stderr is better than that."""
    if not Console().is_jupyter:
        return False
    try:
        from IPython.display import display  # noqa: F401  (what rich's notebook display imports)
        from ipywidgets import Output  # noqa: F401
    except ImportError:
        return True
    return False


def progress_console() -> Console:
    """The stderr console for progress displays: rich's own choice (a live terminal, a notebook
    widget, or text for a file), except plain text in a notebook that has no ipywidgets, as
    wide as rich would draw the widget (a file's 80 columns would squeeze the bar's figures)."""
    if not widgets_missing():
        return Console(stderr=True)
    return Console(stderr=True, force_jupyter=False, width=Console(force_jupyter=True).width)


class _Rate(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} rec/s" if speed else "", style="progress.data.speed")


class _Calls(TextColumn):
    """Teacher throughput and cache hit rate, for generation stages."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):
        from rich.text import Text

        calls = task.fields.get("calls")
        if not calls or not calls.requests:
            return Text("")
        secs = max(task.elapsed or 0.0, 1e-9)
        return Text(
            f"{calls.requests / secs:,.1f} req/s {calls.completion_tokens / secs:,.0f} tok/s "
            f"cache {calls.hit_rate:.0%}",
            style="progress.data.speed",
        )


class StageProgress:
    """One bar per stage; silent when disabled (tests, --quiet, stderr not a terminal)."""

    def __init__(
        self, stage: str, total: int, enabled: bool = True, live: LiveStage | None = None, unit: str = "records"
    ) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self.stage, self.total = stage, total
        self.live = live
        if live is not None:
            live.count(total or None, unit)
        #: When a stage's progress is text (no live display), when its last line was written.
        self._text_at: float | None = None

    def __enter__(self) -> StageProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                _Rate(),
                _Calls(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=progress_console(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.stage, total=self.total or None)
            console = self._progress.console
            if not console.is_interactive and not console.is_jupyter:  # rich writes text at the end only
                self._text_at = time.monotonic()
        return self

    def advance(self, n: int) -> None:
        if self.live is not None and n:
            self.live.advance(n)
        if self._progress is not None and self._task is not None and n:
            self._progress.advance(self._task, n)
            if self._text_at is not None and time.monotonic() - self._text_at >= TEXT_EVERY:
                self._text_at = time.monotonic()
                self._progress.console.print(self._progress.get_renderable())

    def calls(self, stats: CallStats) -> None:
        if self.live is not None:
            self.live.report({"requests": stats.requests, "cache_hits": stats.hits})
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, calls=stats)

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
