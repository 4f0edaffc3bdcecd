"""Every teacher call goes through here: cache first, then the teacher, one result at a time.

The core, not the teacher, owns the cache, so every teacher (first- or third-party) gets it.
Each completed request is stored the moment the teacher yields it: when a batch fails
halfway, the requests that finished are never paid for again.

A runner may `submit` the next batches' requests before it has used the current one's, so a
teacher that serves many requests at once (an API client) always has its slots full, instead
of idling behind the slowest request of each batch. The calls then run on worker threads,
only for teachers that say they can (`Teacher.requests_in_flight`); everything they share here
is under one lock. Other teachers are called on the caller's thread when their batch is
needed, exactly as before.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distill.cache.store import cache_key, key_parts
from distill.errors import PluginError
from distill.teacher import ChatRequest, Sample, Teacher

if TYPE_CHECKING:
    from distill.cache.store import RequestCache


@dataclass
class CallStats:
    requests: int = 0
    hits: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cache_hits": self.hits,
            "teacher_calls": self.requests - self.hits,
            "completion_tokens": self.completion_tokens,
            "teacher_seconds": round(self.seconds, 3),
        }


class Pending:
    """One submitted batch of requests: its cache hits now, its misses when `result` returns."""

    def __init__(self, caller: TeacherCaller, requests: list[ChatRequest], where: str) -> None:
        self.caller, self.requests, self.where = caller, requests, where
        self.results: list[list[Sample] | None] = [None] * len(requests)
        self.keys: list[str] = []
        self.parts: list[dict[str, Any]] = []
        self.missing: list[int] = []
        self.hits = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.cancelled = threading.Event()
        self.thread: threading.Thread | None = None

    def result(self) -> list[list[Sample]]:
        """The samples of every request, in request order; raises what the teacher raised."""
        caller = self.caller
        if self.thread is None and not self.done.is_set():
            caller.generate(self)  # a teacher whose calls must not overlap: now, on this thread
        self.done.wait()
        if self.thread is not None:
            self.thread.join()
        caller.on_progress(caller.stats)
        if self.error is not None:
            raise self.error
        return self.results  # type: ignore[return-value]

    def settle(self) -> None:
        """Let what was sent finish, so that it is cached (a resume then pays nothing twice);
        its errors are not this caller's to raise. Nothing is sent for a batch never started."""
        if self.thread is not None:
            self.thread.join()

    def cancel(self) -> None:
        """Stop asking for what is not answered yet (what was answered is cached already)."""
        self.cancelled.set()
        if self.thread is not None:
            self.thread.join(timeout=60)


@dataclass
class TeacherCaller:
    teacher: Teacher
    cache: RequestCache | None = None
    stats: CallStats = field(default_factory=CallStats)
    on_progress: Callable[[CallStats], None] = lambda s: None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0  # calls in progress, for `stats.seconds` as wall time while any is
        self._since = 0.0
        self.in_flight = max(0, self.teacher.requests_in_flight())
        info = self.teacher.model_info()
        self._identity = {
            "plugin": self.teacher.name,
            "model": info.model,
            "revision": info.revision,
            "file_hash": info.file_hash,
        }
        self._sampling = self.teacher.sampling()
        self._cost_before = self.teacher.cost_usd()
        self._prompt_before = self._prompt_tokens()

    def _prompt_tokens(self) -> int:
        usage = getattr(self.teacher, "usage", None)  # a plugin that skipped Teacher.__init__ has none
        return int(getattr(usage, "prompt_tokens", 0) or 0)

    def figures(self) -> dict[str, Any]:
        """The stage's teacher figures: calls and cache hits, tokens, and what it cost, where the
        teacher knows its prices."""
        out = self.stats.as_dict()
        out["prompt_tokens"] = self._prompt_tokens() - self._prompt_before
        cost = self.teacher.cost_usd()
        if cost is not None:
            out["cost_usd"] = round(cost - (self._cost_before or 0.0), 10)
        return out

    def lookahead(self, batch_size: int) -> int:
        """How many batches past the one being used a runner should keep submitted so that the
        teacher's `in_flight` slots stay full (0: the teacher takes one call at a time)."""
        return math.ceil(self.in_flight / batch_size) + 1 if self.in_flight else 0

    def __call__(self, requests: list[ChatRequest], where: str) -> list[list[Sample]]:
        return self.submit(requests, where).result()

    def submit(self, requests: list[ChatRequest], where: str) -> Pending:
        """Look the requests up now; send the misses at once on a worker thread if the teacher
        serves overlapping calls, else when `result` is asked for."""
        p = Pending(self, requests, where)
        if self.cache is not None and requests:
            p.parts = [key_parts(self._identity, self._sampling, r) for r in requests]
            p.keys = [cache_key(x) for x in p.parts]
            with self._lock:
                hits = self.cache.get_many(p.keys)
            for i, hit in enumerate(hits):
                p.results[i] = hit
        p.missing = [i for i, r in enumerate(p.results) if r is None]
        p.hits = len(requests) - len(p.missing)
        with self._lock:
            self.stats.requests += len(requests)
            self.stats.hits += p.hits
            if self.cache is not None and p.missing:
                self.cache.record_misses([(p.keys[i], p.parts[i]) for i in p.missing])
        if not p.missing:
            p.done.set()
        elif self.in_flight:
            p.thread = threading.Thread(target=self.generate, args=(p,), name="distill-teacher-call", daemon=True)
            p.thread.start()
        return p

    def generate(self, p: Pending) -> None:
        """Ask the teacher for `p`'s misses, caching each result as it is yielded."""
        sub = [p.requests[i] for i in p.missing]
        done = 0
        self._started()
        try:
            stream = self.teacher.iter_generate(sub)
            try:
                for j, samples in stream:
                    i = p.missing[j]
                    p.results[i] = samples
                    done += 1
                    with self._lock:
                        self.stats.completion_tokens += sum(s.completion_tokens or 0 for s in samples)
                        if self.cache is not None:
                            self.cache.put(p.keys[i], p.parts[i], samples)
                    if p.cancelled.is_set():
                        return
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # a stopped stream cancels what the teacher has not answered
            if done != len(sub) or any(p.results[i] is None for i in p.missing):
                raise PluginError(
                    f"teacher plugin {self.teacher.name!r} returned {done} results for {len(sub)} requests on {p.where}"
                )
        except PluginError as exc:
            p.error = exc
        except Exception as exc:
            p.error = PluginError(
                f"teacher plugin {self.teacher.name!r} failed on {p.where}: {type(exc).__name__}: {exc}"
            )
            p.error.__cause__ = exc
        except BaseException as exc:  # KeyboardInterrupt on the caller's thread
            p.error = exc
        finally:
            self._stopped()
            p.done.set()

    def _started(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = time.monotonic()
            self._active += 1

    def _stopped(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.stats.seconds += time.monotonic() - self._since
