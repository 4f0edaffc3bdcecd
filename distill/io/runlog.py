"""The run's log as events, for logs read later: CI, nohup, a container's log.

A terminal gets rich bars (`distill.io.progress`). Anywhere else bars are noise, and a stage
that prints nothing for minutes looks hung, so `distill run` prints events instead: one when a
stage starts, one when it ends (its counts, seconds, teacher requests and cache hits), and one
every `interval` seconds while it runs. The steady line comes from a ticker thread, not from
the work, so a stage stuck in one long call still says how long it has been at it.

Events are written as text or as JSON lines (`LinePrinter`), and trackers read the same
events (`distill.io.tracking`): what a stage reported is formatted here and nowhere else.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from distill.environment import environment
from distill.errors import scrub

#: Event kinds, in the order a stage produces them; `message` is any other line of the run.
EVENTS = ("stage_start", "progress", "stage_end", "message", "error")
FORMATS = ("text", "json")
#: Seconds between progress lines unless `--log-interval` or this variable says otherwise.
INTERVAL_ENV = "DISTILL_LOG_INTERVAL"
DEFAULT_INTERVAL = 30.0
#: What turns third-party bars off, for this process and every process it starts.
BAR_SWITCHES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


@dataclass(frozen=True)
class RunEvent:
    event: str
    stage: str | None = None
    kind: str | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """One flat object: `time`, `event`, `stage`, `kind`, then the figures (easy to `jq`)."""
        stamp = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        head: dict[str, Any] = {"time": stamp.replace("+00:00", "Z"), "event": self.event}
        if self.stage is not None:
            head.update(stage=self.stage, kind=self.kind)
        return {**head, **self.figures}


Listener = Callable[[RunEvent], None]


class LiveStage:
    """How far the running stage is, as its work says; the ticker thread reads it."""

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.started = time.monotonic()
        self.status = "done"
        #: What the stage's `stage_end` event carries besides status and seconds.
        self.result: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._done = 0
        self._total: int | None = None
        self._unit = "records"
        self._since: float | None = None
        self._figures: dict[str, Any] = {}

    @property
    def phase_text(self) -> str | None:
        return self._phase

    def phase(self, text: str | None, *, reset: bool = False) -> None:
        """What the stage is doing (starting a teacher, one contender answering); `reset`: a new
        piece of work whose counts and figures start over."""
        with self._lock:
            self._phase = text
            if reset:
                self._done, self._total, self._since, self._figures = 0, None, None, {}

    def count(self, total: int | None, unit: str = "records") -> None:
        with self._lock:
            self._done, self._total, self._unit, self._since = 0, total, unit, time.monotonic()

    def advance(self, n: int) -> None:
        with self._lock:
            self._done += n

    def report(self, figures: Mapping[str, Any]) -> None:
        """Figures of the work under way (a trainer's step and loss, teacher calls so far); a
        figure reported as None is no longer known (the next training step has no loss yet)."""
        with self._lock:
            for key, value in figures.items():
                if value is None:
                    self._figures.pop(key, None)
                else:
                    self._figures[key] = value

    def finish(self, status: str = "done", **figures: Any) -> None:
        self.status = status
        self.result.update(figures)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            out: dict[str, Any] = {}
            if self._phase:
                out["phase"] = self._phase
            if self._since is not None:
                out.update(done=self._done, total=self._total, unit=self._unit)
                if self._done and now > self._since:
                    out["rate"] = round(self._done / (now - self._since), 2)
            out.update(self._figures)
            out["elapsed"] = round(now - self.started, 1)
        return out


class RunLog:
    """Sends a run's stage events to its listeners, with a progress event every `interval`
    seconds while a stage runs (None: no progress events)."""

    def __init__(self, listeners: Sequence[Listener] = (), interval: float | None = None) -> None:
        self.listeners = list(listeners)
        self.interval = interval
        #: The running stage; outside one, a stand-in whose reports go nowhere.
        self.live = LiveStage("", "")

    def emit(self, event: RunEvent) -> None:
        for listener in self.listeners:
            listener(event)

    @contextmanager
    def stage(self, name: str, kind: str) -> Iterator[LiveStage]:
        live = self.live = LiveStage(name, kind)
        self.emit(RunEvent("stage_start", name, kind))
        stop = threading.Event()
        ticker = None
        if self.listeners and self.interval:
            ticker = threading.Thread(target=self._tick, args=(live, stop), name=f"runlog-{name}", daemon=True)
            ticker.start()
        failed: BaseException | None = None
        try:
            yield live
        except BaseException as exc:
            failed = exc
            live.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            live.result["error"] = type(exc).__name__ + (f": {str(exc).splitlines()[0]}" if str(exc) else "")
            raise
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
            self.live = LiveStage("", "")
            end = RunEvent(
                "stage_end",
                name,
                kind,
                {"status": live.status, "seconds": round(time.monotonic() - live.started, 2), **live.result},
            )
            if failed is None:
                self.emit(end)
            else:  # the stage's own error is the one to raise
                with suppress(Exception):
                    self.emit(end)

    def _tick(self, live: LiveStage, stop: threading.Event) -> None:
        assert self.interval
        while not stop.wait(self.interval):
            try:
                self.emit(RunEvent("progress", live.name, live.kind, live.snapshot()))
            except Exception:  # a closed stream: the run goes on without its progress lines
                return


# ----------------------------------------------------------------------------- printing


class LinePrinter:
    """Writes events as lines (`text` or `json`) on a stream, secrets scrubbed, whole lines
    even when the ticker thread and the work print at once."""

    def __init__(self, stream: TextIO | None = None, fmt: str = "text") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"log format {fmt!r}: known: {', '.join(FORMATS)}")
        self.stream = stream or sys.stderr
        self.fmt = fmt
        self._lock = threading.Lock()

    def event(self, event: RunEvent) -> None:
        line = to_json(event) if self.fmt == "json" else to_text(event)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        self.event(RunEvent("message", figures={"text": text}))

    def error(self, text: str, exit_code: int) -> None:
        self.event(RunEvent("error", figures={"message": text, "exit_code": exit_code}))


def to_json(event: RunEvent) -> str:
    """Each value scrubbed before it is escaped: a secret with a quote in it is still found."""
    return scrub(json.dumps(_scrubbed(event.as_dict()), default=str))


def to_text(event: RunEvent) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(event.time))
    f = event.figures
    if event.event == "message":
        body = str(f.get("text", ""))
    elif event.event == "error":
        body = f"error: {f.get('message', '')}"
    elif event.event == "stage_start":
        body = f"stage {event.stage!r} ({event.kind}) started"
    elif event.event == "progress":
        body = f"stage {event.stage!r}: {progress_text(f)}"
    elif event.event == "stage_end":
        body = f"stage {event.stage!r} {end_text(f)}"
    else:
        body = f"{event.event} {event.stage or ''}: {f}"
    return scrub(f"{clock} {body}")


def progress_text(f: Mapping[str, Any]) -> str:
    parts = [str(f["phase"])] if f.get("phase") else []
    if "done" in f:
        unit, total = f.get("unit", "records"), f.get("total")
        part = f"{f['done']:,}/{total:,} {unit}" if total else f"{f['done']:,} {unit}"
        if total:
            part += f" ({100 * f['done'] / total:.0f}%)"
        if f.get("rate"):
            part += f", {f['rate']:,.1f} {unit}/s"
        parts.append(part)
    if "step" in f:
        name = f"{f['train_step']} " if f.get("train_step") else ""
        of = f"/{f['max_steps']:,}" if f.get("max_steps") else ""
        parts.append(f"{name}step {f['step']:,}{of}" + (f", loss {f['loss']:.4g}" if "loss" in f else ""))
    elif f.get("train_step"):
        parts.append(f"{f['train_step']}: loading the student and its data")
    if f.get("requests"):
        parts.append(_calls(f))
    parts.append(f"{f.get('elapsed', 0):.0f}s elapsed")
    return ", ".join(parts)


def end_text(f: Mapping[str, Any]) -> str:
    status, seconds = f.get("status", "done"), f.get("seconds", 0.0)
    head = {
        "done": f"done in {seconds:.1f}s",
        "cached": "cached",
        "failed": f"failed after {seconds:.1f}s: {f.get('error', '')}",
        "interrupted": f"interrupted after {seconds:.1f}s",
    }.get(status, f"{status} after {seconds:.1f}s")
    parts = []
    if "kept" in f:
        counts = f"in {f.get('in', 0):,}, generated {f.get('generated', 0):,}, kept {f['kept']:,}, rejected {f.get('rejected', 0):,}"
        reasons = sorted((f.get("reasons") or {}).items(), key=lambda kv: -kv[1])
        if reasons:
            shown = ", ".join(f"{r}: {n:,}" for r, n in reasons[:3])
            counts += f" ({shown}{', ...' if len(reasons) > 3 else ''})"
        parts.append(counts)
    if f.get("requests"):
        parts.append(_calls(f))
    for s in f.get("steps") or []:
        loss = f", final loss {s['final_loss']:.4g}" if s.get("final_loss") is not None else ""
        parts.append(f"{s['step']}: {s['global_step']:,} steps{loss} ({s['status']})")
    for metric, scores in (f.get("metrics") or {}).items():
        parts.append(f"{metric}: " + ", ".join(f"{c} {v:.4g}" for c, v in scores.items()))
    return head + (": " + "; ".join(parts) if parts else "")


def _calls(f: Mapping[str, Any]) -> str:
    return f"{f['requests']:,} teacher requests, {f.get('cache_hits', 0):,} cache hits"


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {scrub(str(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    return value


# ----------------------------------------------------------------------------- third-party bars


@contextmanager
def library_bars_hidden() -> Iterator[None]:
    """transformers' `Loading weights`, datasets' maps, vLLM's and TRL's tqdm bars off for the run
    and every process it starts (accelerate, vLLM workers); the settings come back after.

    Set here, by the run that prints lines, and not when distill is imported: importing distill
    must change nothing. Libraries imported later read the environment; those imported
    already are told directly."""
    undo: list[Callable[[], None]] = []
    with environment(BAR_SWITCHES):
        hf = sys.modules.get("transformers.utils.logging")
        if hf is not None and hf.is_progress_bar_enabled():
            hf.disable_progress_bar()
            undo.append(hf.enable_progress_bar)
        datasets = sys.modules.get("datasets")
        if datasets is not None and not datasets.utils.are_progress_bars_disabled():
            datasets.disable_progress_bars()
            undo.append(datasets.enable_progress_bars)
        try:
            yield
        finally:
            for f in undo:
                with suppress(Exception):
                    f()
