"""Pacing, accounting and plumbing for teachers behind a paid or shared HTTP API.

Kept apart from the OpenAI teacher because none of it depends on the client library: rate
limits, back-off, a spending budget, and running async clients under a synchronous core are
the same for any remote model, and the next API teacher should reuse them rather than
re-derive the edge cases (debt after a large request, a budget that must survive a killed
run, results that must be handed over before an error is). When to retry, and who waits
meanwhile, is _api_retry's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.teacher import Sample


class TokenBucket:
    """A per-minute limit as a bucket that may go into debt.

    Why debt: a request's token cost is only estimated up front (prompt length plus the most
    it may generate) and can exceed what the bucket holds; refusing it forever would deadlock,
    so it waits for a partial refill and the excess is paid back by the requests after it.
    The bucket holds ten seconds' worth, so a run starts promptly without a burst of a whole
    minute's quota that providers enforcing shorter windows would answer with 429s.
    """

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 6.0)
        self.level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, cost: float) -> None:
        async with self._lock:  # first come, first served: no request starves behind later ones
            need = min(cost, self.capacity)
            while True:
                self._refill()
                if self.level >= need:
                    self.level -= cost
                    return
                await asyncio.sleep((need - self.level) / self.rate)

    def correct(self, delta: float) -> None:
        """Charge (or refund) the difference between the estimate and what the server billed."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class TokenEstimator:
    """A request's token cost before the server says, calibrated by what the server reports.

    ~4 characters a token misses the chat template (a default system prompt alone can be
    dozens of tokens); the budget and the token limit reserve by this estimate, so a guess
    that stays too low lets concurrent requests overshoot a cap. The completion part is the
    most it may generate, an upper bound that needs no calibration.
    """

    def __init__(self) -> None:
        self.scale: float | None = None

    @staticmethod
    def raw_prompt(messages: list[Any]) -> float:
        chars = sum(len(getattr(m, "content", "") or "") for m in messages)
        return chars / 4 + 8 * len(messages)

    def estimate(self, messages: list[Any], max_tokens: int, n: int) -> tuple[int, float]:
        """(estimated tokens, the uncalibrated prompt guess to hand back to `observe`)."""
        raw = self.raw_prompt(messages)
        return math.ceil(raw * (self.scale or 1.0)) + max_tokens * n, raw

    def observe(self, raw: float, prompt_tokens: int) -> None:
        if raw <= 0 or prompt_tokens <= 0:
            return
        ratio = prompt_tokens / raw
        self.scale = ratio if self.scale is None else 0.8 * self.scale + 0.2 * ratio


@dataclass
class Spent:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Budget:
    """Tokens and dollars spent, persisted after each request so a resumed run keeps counting.

    A budget that reset on resume would let a crash-looping run spend without bound. The file
    is replaced atomically (write, fsync, rename), so a kill at any moment leaves either the
    previous count or the new one, never a torn file.
    """

    FILE = "api-budget.json"

    def __init__(
        self,
        state_dir: Path | None,
        *,
        max_total_tokens: int | None = None,
        max_cost_usd: float | None = None,
        price_per_1k_prompt: float | None = None,
        price_per_1k_completion: float | None = None,
    ) -> None:
        self.path = Path(state_dir) / self.FILE if state_dir is not None else None
        self.max_total_tokens = max_total_tokens
        self.max_cost_usd = max_cost_usd
        self.price_prompt = price_per_1k_prompt
        self.price_completion = price_per_1k_completion
        self.spent = Spent()
        #: Estimated tokens of requests in flight, so concurrent requests cannot all pass the
        #: check at once and overshoot the cap by a whole batch.
        self.reserved = 0.0
        self._released = asyncio.Event()
        if self.path is not None and self.path.is_file():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            fields = {k: data[k] for k in asdict(self.spent) if k in data}
            self.spent = Spent(**fields)

    @property
    def limited(self) -> bool:
        return self.max_total_tokens is not None or self.max_cost_usd is not None

    def cost(self, prompt_tokens: float, completion_tokens: float, price_factor: float = 1.0) -> float:
        """Dollars at the configured prices, times `price_factor` (a batch API's discount)."""
        dollars = prompt_tokens * (self.price_prompt or 0.0) + completion_tokens * (self.price_completion or 0.0)
        return dollars * price_factor / 1000

    def exhausted(self) -> str | None:
        """Why no further request may be sent, or None."""
        s = self.spent
        if self.max_total_tokens is not None and s.total_tokens >= self.max_total_tokens:
            return (
                f"budget spent: {s.total_tokens} of max_total_tokens={self.max_total_tokens} tokens "
                f"used over {s.requests} requests"
            )
        if self.max_cost_usd is not None and s.cost_usd >= self.max_cost_usd:
            return (
                f"budget spent: ${s.cost_usd:.4f} of max_cost_usd={self.max_cost_usd} used over {s.requests} requests"
            )
        return None

    def _would_exceed(self, estimate: float) -> bool:
        return not self.fits(self.reserved + estimate)

    def fits(self, pending: float, price_factor: float = 1.0) -> bool:
        """Whether `pending` more tokens (an estimate) stay within the caps."""
        s = self.spent
        if self.max_total_tokens is not None and s.total_tokens + pending > self.max_total_tokens:
            return False
        # Reserve dollars at the dearer of the two prices: the split is unknown in advance.
        price = max(self.price_prompt or 0.0, self.price_completion or 0.0) * price_factor
        return self.max_cost_usd is None or s.cost_usd + pending * price / 1000 <= self.max_cost_usd

    async def reserve(self, estimate: float) -> str | None:
        """Hold `estimate` tokens for a request about to be sent; returns the reason to stop
        instead when the budget is spent. While the cap would be overshot only because other
        requests are in flight, waits for them: they may end up cheaper than estimated. The
        last request is let through alone, so a run stops within one request of its cap."""
        if not self.limited:
            return None
        while True:
            reason = self.exhausted()
            if reason:
                return reason
            if self.reserved <= 0 or not self._would_exceed(estimate):
                self.reserved += estimate
                return None
            self._released.clear()
            await self._released.wait()

    def release(self, estimate: float) -> None:
        if self.limited:
            self.reserved = max(0.0, self.reserved - estimate)
            self._released.set()

    def add(self, prompt_tokens: int, completion_tokens: int, price_factor: float = 1.0) -> None:
        s = self.spent
        s.requests += 1
        s.prompt_tokens += prompt_tokens
        s.completion_tokens += completion_tokens
        s.cost_usd += self.cost(prompt_tokens, completion_tokens, price_factor)
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            **asdict(self.spent),
            "total_tokens": self.spent.total_tokens,
            "max_total_tokens": self.max_total_tokens,
            "max_cost_usd": self.max_cost_usd,
        }
        fd, tmp = tempfile.mkstemp(prefix=".budget-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def apportion(total: int, weights: list[int]) -> list[int | None]:
    """Split a response's completion tokens over its choices by text length, summing exactly.

    Servers report usage per response, not per choice; exact counts come with logprobs."""
    if len(weights) == 1:
        return [total or None]
    if not total:
        return [None] * len(weights)
    scale = sum(weights) or len(weights)
    raw = [total * (w if sum(weights) else 1) / scale for w in weights]
    out = [int(r) for r in raw]
    for j in sorted(range(len(raw)), key=lambda j: out[j] - raw[j])[: total - sum(out)]:
        out[j] += 1
    return out


def chat_samples(response: Any) -> tuple[list[Sample], int, int] | None:
    """A chat completion's choices as samples, and the usage it reports (prompt, completion);
    None when it has no choices (the client hands back a body that is not JSON as a str)."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        return None
    usage = getattr(response, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    texts = [(c.message.content or "") if c.message is not None else "" for c in choices]
    samples = []
    for choice, text, counted in zip(choices, texts, apportion(completion, [len(t) for t in texts])):
        logprobs = None
        content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
        if content is not None:
            logprobs = [float(t.logprob) for t in content]
            counted = len(logprobs)
        samples.append(
            Sample(
                text=text,
                finish_reason=choice.finish_reason,
                completion_tokens=counted,
                prompt_tokens=prompt or None,
                logprobs=logprobs,
            )
        )
    return samples, prompt, completion


async def emit_as_completed(
    tasks: list[asyncio.Task[Any]], emit: Callable[[Any], None], expected: type[Exception]
) -> list[Exception]:
    """Emit each task's `(index, result)` as it completes; return the `expected` failures.

    Any other error cancels the rest, but whatever still finished is emitted before it
    propagates: a result paid for is cached even when its batch fails."""
    emitted: set[int] = set()
    failed: list[Exception] = []
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                outcome = await next_done
            except expected as exc:
                failed.append(exc)
                continue
            emitted.add(outcome[0])
            emit(outcome)
    finally:
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, tuple) and outcome[0] not in emitted:
                emitted.add(outcome[0])
                emit(outcome)
    return failed


def error_message(exc: Any) -> str:
    """The server's own message where its JSON body has one (short), else the exception's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        if msg:
            return str(msg)[:500]
    return str(exc)[:500]


_DONE = object()


class LoopThread:
    """An asyncio loop of its own in a daemon thread, for async clients under a sync core.

    One loop for the teacher's lifetime, not one per batch: the client's connection pool is
    bound to its loop, so connections stay open from batch to batch, and the loop keeps
    serving in-flight requests while the caller processes what was already yielded.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stream(self, produce: Callable[[Callable[[Any], None]], Awaitable[None]]) -> Iterator[Any]:
        """Yield what `produce(emit)` emits, as it emits it, then raise what it raised.

        Everything emitted before an error is yielded before the error propagates. If the
        consumer stops early, the producer is cancelled (no paying for unwanted results)."""
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()

        async def run() -> None:
            try:
                await produce(items.put)
            finally:
                items.put(_DONE)

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            while (item := items.get()) is not _DONE:
                yield item
            future.result()
        finally:
            if not future.done():
                future.cancel()
                try:
                    future.result(timeout=10)
                except (concurrent.futures.CancelledError, Exception):
                    pass

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
