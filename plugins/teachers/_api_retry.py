"""When to try a failed API request again, and who waits meanwhile.

A 429 with `Retry-After` is the server naming a wait for the request it refused, and only for
that request: its neighbours, already admitted or not yet sent, are not refused and need not
wait. Pausing every request on each 429 (what this teacher used to do) turned a 30% refusal
rate with `Retry-After: 1` into a run 2-4x longer than the waits asked for, because each
refusal stalled every slot, and a refused request then waited its own delay plus the pauses
the others had opened meanwhile. So:

- the refused request waits what was named, once (not plus anyone else's pause);
- the other requests are paused only when the server says the limit they all share is spent
  (OpenAI's `x-ratelimit-remaining-requests: 0` or `...-tokens: 0`), until the reset it names,
  and only once per window: refusals of requests sent before that pause began are answers
  from the same window, and do not open or extend another one;
- with no wait named, exponential back-off with full jitter, per request.

Retries keep their concurrency slot (the caller holds it around `RetryPolicy.run`), so a dead
server sees few requests. The policy is shared by every request of one teacher, which all run
on the teacher's one event loop: its state needs no lock, and several batches streaming at
once share one window.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TypeVar

T = TypeVar("T")

#: A server asking for a longer pause than this is treated as asking for this long: a stage
#: that sleeps for an hour on one header looks hung, and the circuit breaker exists for outages.
MAX_RETRY_AFTER = 300.0

#: Shared pauses shorter than this are clock noise (a request whose own wait opened the window
#: wakes a hair before its end), not a wait worth counting.
_NOISE = 0.002

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: clients that failed together retry apart."""
    return rng.uniform(0.0, min(cap, base * (2.0**attempt)))


def _capped(seconds: float) -> float:
    return MAX_RETRY_AFTER if not math.isfinite(seconds) else min(max(0.0, seconds), MAX_RETRY_AFTER)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The server's requested pause, from `retry-after-ms`, or `retry-after` as seconds or an
    HTTP date; None when absent or unreadable (then our own back-off applies)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            if name == "retry-after-ms":
                continue
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when is None:
                return None
            seconds = when.timestamp() - time.time()
        return _capped(seconds)
    return None


def duration_seconds(value: str | None) -> float | None:
    """OpenAI's reset times (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) or plain seconds; None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        return _capped(float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    return _capped(sum(float(n) * _UNIT[u] for n, u in parts))


@dataclass(frozen=True)
class ServerWait:
    """What a refusal's headers asked for."""

    #: Seconds named for the refused request (Retry-After, retry-after-ms), if any.
    retry_after: float | None = None
    #: The server says a limit every request shares is spent (`x-ratelimit-remaining-*: 0`).
    limit_spent: bool = False
    #: When that limit refills, from `x-ratelimit-reset-*` (the latest of the spent ones).
    reset: float | None = None

    @property
    def named(self) -> float | None:
        """The wait the server named, if it named one: Retry-After first, else the reset of a
        spent limit."""
        if self.retry_after is not None:
            return self.retry_after
        return self.reset if self.limit_spent else None


def server_wait(headers: Mapping[str, str] | None) -> ServerWait:
    """Read a refusal's headers: its own Retry-After and whether a shared limit is spent."""
    if not headers:
        return ServerWait()
    spent = False
    resets: list[float] = []
    for kind in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        try:
            exhausted = remaining is not None and float(remaining) <= 0
        except ValueError:
            exhausted = False
        if exhausted:
            spent = True
            reset = duration_seconds(headers.get(f"x-ratelimit-reset-{kind}"))
            if reset is not None:
                resets.append(reset)
    return ServerWait(retry_after_seconds(headers), spent, max(resets) if resets else None)


class Retryable(Exception):
    """One attempt failed in a way that a later attempt may not: 429, 5xx, timeout, torn body."""

    def __init__(self, message: str, wait: ServerWait | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class RetryAtOnce(Exception):
    """Send again now, without counting a failed attempt (the request was changed to fit)."""


class OutOfRetries(Exception):
    """Every attempt failed; the message is the last failure's."""


@dataclass
class PauseStats:
    """Where the time went: what servers asked for and what was waited, for runs and tests."""

    refusals: int = 0  # failures that named a wait (Retry-After, or a spent shared limit's reset)
    requested_seconds: float = 0.0  # the waits they named, summed
    own_wait_seconds: float = 0.0  # slept by refused requests on their own named wait
    backoff_count: int = 0  # failures that named no wait: our own back-off
    backoff_seconds: float = 0.0
    shared_refusals: int = 0  # refusals saying the shared limit is spent
    shared_pauses: int = 0  # pauses of every request opened by those (one per window)
    shared_pause_seconds: float = 0.0  # their lengths, summed (wall time all were held)
    shared_wait_seconds: float = 0.0  # what requests spent waiting in them, summed over requests
    calls: int = 0  # API calls finished (answered or out of retries)
    calls_paused: int = 0  # of those, the ones that waited at all
    max_call_wait_seconds: float = 0.0  # the longest one call waited, all pauses together

    @property
    def paused_seconds(self) -> float:
        """Waiting summed over requests, of every kind."""
        return self.own_wait_seconds + self.backoff_seconds + self.shared_wait_seconds

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()} | {
            "paused_seconds": round(self.paused_seconds, 4)
        }


@dataclass
class CallState:
    """One API call's progress through its attempts."""

    attempt: int = 0
    sent_at: float = -math.inf  # when the latest attempt went out (time.monotonic)
    waited: float = 0.0
    last: str = "no attempt made"

    def sent(self) -> None:
        """Mark the attempt as sent: call right before the request leaves."""
        self.sent_at = time.monotonic()


class RetryPolicy:
    """Runs one API call's attempts, waiting between them what the server named (see the module)."""

    def __init__(self, backoff_base: float, backoff_max: float, rng: random.Random | None = None) -> None:
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.rng = rng or random.Random()
        self.stats = PauseStats()
        self._window_start = -math.inf  # when the latest shared pause began
        self._window_end = -math.inf

    async def run(self, attempt: Callable[[CallState], Awaitable[T]], max_retries: int) -> T:
        """`attempt(state)` until it returns, at most `1 + max_retries` times; it calls
        `state.sent()` just before its request leaves, and raises `Retryable` to go again."""
        call = CallState()
        try:
            while call.attempt <= max_retries:
                await self._wait_shared(call)
                try:
                    return await attempt(call)
                except Retryable as exc:
                    call.last = str(exc)
                    delay, kind = self._delay(call, exc.wait)
                    call.attempt += 1
                    if call.attempt <= max_retries:
                        await self._sleep(call, delay, kind)
                except RetryAtOnce:
                    continue
            raise OutOfRetries(call.last)
        finally:
            self._finish(call)

    def _delay(self, call: CallState, wait: ServerWait | None) -> tuple[float, str]:
        named = wait.named if wait is not None else None
        s = self.stats
        if named is None:
            s.backoff_count += 1
            return backoff_delay(call.attempt, self.backoff_base, self.backoff_max, self.rng), "backoff"
        s.refusals += 1
        s.requested_seconds += named
        if wait is not None and wait.limit_spent:
            s.shared_refusals += 1
            # Sent after the latest pause began: the limit is spent again, a new window. Sent
            # before: an answer from the window already paused for, which must not extend it.
            if call.sent_at >= self._window_start:
                now = time.monotonic()
                self._window_start, self._window_end = now, max(self._window_end, now + named)
                s.shared_pauses += 1
                s.shared_pause_seconds += named
        return named, "own"

    async def _wait_shared(self, call: CallState) -> None:
        while (left := self._window_end - time.monotonic()) > _NOISE:
            await self._sleep(call, left, "shared")

    async def _sleep(self, call: CallState, delay: float, kind: str) -> None:
        started = time.monotonic()
        try:
            await asyncio.sleep(delay)
        finally:  # counted even when cancelled: the time was spent
            slept = time.monotonic() - started
            call.waited += slept
            s = self.stats
            if kind == "own":
                s.own_wait_seconds += slept
            elif kind == "backoff":
                s.backoff_seconds += slept
            else:
                s.shared_wait_seconds += slept

    def _finish(self, call: CallState) -> None:
        s = self.stats
        s.calls += 1
        if call.waited > 0:
            s.calls_paused += 1
            s.max_call_wait_seconds = max(s.max_call_wait_seconds, call.waited)
