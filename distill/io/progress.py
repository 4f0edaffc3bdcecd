"""Progress bars for long work: records done, rate, and time left, on stderr."""

from __future__ import annotations

from types import TracebackType
from typing import Any

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
    """One bar per stage; silent when disabled (tests, --quiet)."""

    def __init__(self, stage: str, total: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self.stage, self.total = stage, total

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
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.stage, total=self.total or None)
        return self

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None and n:
            self._progress.advance(self._task, n)

    def calls(self, stats: object) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, calls=stats)

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
