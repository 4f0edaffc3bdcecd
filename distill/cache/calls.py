"""Every teacher call goes through here: cache first, then the teacher, one result at a time.

The core, not the teacher, owns the cache, so every teacher (first- or third-party) gets it.
Each completed request is stored the moment the teacher yields it: when a batch fails
halfway, the requests that finished are never paid for again.
"""

from __future__ import annotations

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


@dataclass
class TeacherCaller:
    teacher: Teacher
    cache: RequestCache | None = None
    stats: CallStats = field(default_factory=CallStats)
    on_progress: Callable[[CallStats], None] = lambda s: None

    def __post_init__(self) -> None:
        info = self.teacher.model_info()
        self._identity = {
            "plugin": self.teacher.name,
            "model": info.model,
            "revision": info.revision,
            "file_hash": info.file_hash,
        }
        self._sampling = self.teacher.sampling()

    def __call__(self, requests: list[ChatRequest], where: str) -> list[list[Sample]]:
        if not requests:
            return []
        results: list[list[Sample] | None] = [None] * len(requests)
        keys: list[str] = []
        parts: list[dict[str, Any]] = []
        if self.cache is not None:
            parts = [key_parts(self._identity, self._sampling, r) for r in requests]
            keys = [cache_key(p) for p in parts]
            for i, hit in enumerate(self.cache.get_many(keys)):
                results[i] = hit
        missing = [i for i, r in enumerate(results) if r is None]
        self.stats.requests += len(requests)
        self.stats.hits += len(requests) - len(missing)
        if missing:
            self._generate(requests, missing, results, keys, parts, where)
        self.on_progress(self.stats)
        return results  # type: ignore[return-value]

    def _generate(
        self,
        requests: list[ChatRequest],
        missing: list[int],
        results: list[Any],
        keys: list[str],
        parts: list[dict[str, Any]],
        where: str,
    ) -> None:
        if self.cache is not None:
            self.cache.record_misses([(keys[i], parts[i]) for i in missing])
        sub = [requests[i] for i in missing]
        started = time.monotonic()
        done = 0
        try:
            for j, samples in self.teacher.iter_generate(sub):
                i = missing[j]
                results[i] = samples
                done += 1
                self.stats.completion_tokens += sum(s.completion_tokens or 0 for s in samples)
                if self.cache is not None:
                    self.cache.put(keys[i], parts[i], samples)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"teacher plugin {self.teacher.name!r} failed on {where}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self.stats.seconds += time.monotonic() - started
        if done != len(sub) or any(results[i] is None for i in missing):
            raise PluginError(
                f"teacher plugin {self.teacher.name!r} returned {done} results for {len(sub)} requests on {where}"
            )
