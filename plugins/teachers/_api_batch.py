"""OpenAI's Batch API under an API teacher: requests go out as a file and come back hours later
at (usually) half the price.

What makes this hard is durability, not the API. A batch is paid for once it is created, and
its results arrive long after the process that created it may have been killed. So every
step is written down before the next one is taken, in an append-only, fsync'd ledger in the
teacher's state folder: the uploaded file and the request ids in it, then the batch made
from it. A resumed run that asks for a request the ledger knows attaches to its batch (polls
it, or re-reads the finished batch's output, which costs nothing) instead of paying again. A
file whose batch was never recorded (killed between the two calls) is looked up among the
server's batches by its file id before anything is created.

Request ids are a hash of the request body, so the same request gets the same id in every
run; requests from overlapping calls are gathered for `window` seconds into one batch, which
is how a stage's cache misses become one job although the core sends them in chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from distill.errors import TeacherUnavailable
from distill_plugins.teachers._api_support import Budget

log = logging.getLogger("distill.teachers.batch")

ENDPOINT = "/v1/chat/completions"
ADOPT_SCAN = 1000
#: Statuses after which a batch changes no more.
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def custom_id(body: dict[str, Any]) -> str:
    """The same request body gets the same id in every run: what lets a resume find its batch."""
    return "distill-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:40]


def request_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A client call's keyword arguments as the JSON body a batch line carries."""
    body = {k: v for k, v in kwargs.items() if k != "extra_body"}
    body.update(kwargs.get("extra_body") or {})
    return body


class BatchOptions(BaseModel):
    """The Batch API settings of an API teacher's options."""

    batch: bool = Field(
        False,
        description="Send cache misses through the Batch API (files + batches) instead of live requests: "
        "usually half price, results within `batch_completion_window`. A killed run resumes polling.",
    )
    batch_window: float = Field(
        2.0, gt=0, description="Seconds without a new request before the gathered requests go out as one batch."
    )
    batch_max_requests: int = Field(5000, ge=1, le=50000, description="Most requests in one batch (OpenAI: 50,000).")
    batch_poll_seconds: float = Field(30.0, gt=0, description="Seconds between status checks of a pending batch.")
    batch_completion_window: str = Field("24h", description="The batch's completion_window, as the API names it.")
    batch_price_factor: float = Field(
        0.5, ge=0, description="Share of the live prices a batch is charged (OpenAI's batch discount: 0.5)."
    )
    batch_failures: Literal["live", "report"] = Field(
        "live",
        description="Requests a batch did not answer: `live` sends them again as live requests (with retries), "
        "`report` fails the stage naming each reason.",
    )


@dataclass
class Outcome:
    """One request's line in a finished batch: the chat completion, or why there is none."""

    response: dict[str, Any] | None = None
    error: str | None = None


class Ledger:
    """`batches.jsonl`: one JSON line per step, appended and fsync'd before the next step."""

    FILE = "batches.jsonl"

    def __init__(self, state_dir: Path | None) -> None:
        self.path = Path(state_dir) / self.FILE if state_dir is not None else None
        self.file_ids: dict[str, list[str]] = {}  # uploaded file -> request ids in it
        self.batch_of_file: dict[str, str] = {}
        self.latest: dict[str, str] = {}  # request id -> the file it was last sent in
        self.abandoned: set[str] = set()
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    self._apply(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line torn by a kill: the step after it never happened

    def _apply(self, event: dict[str, Any]) -> None:
        if "ids" in event:
            self.file_ids[event["file"]] = list(event["ids"])
            for rid in event["ids"]:
                self.latest[rid] = event["file"]
        elif "batch" in event:
            self.batch_of_file[event["file"]] = event["batch"]
        elif "abandoned" in event:
            self.abandoned.add(event["abandoned"])

    def record(self, event: dict[str, Any]) -> None:
        self._apply(event)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def sent_in(self, rid: str) -> str | None:
        """The file a request was last sent in, unless that file was given up before batching."""
        file_id = self.latest.get(rid)
        return None if file_id is None or file_id in self.abandoned else file_id


@dataclass
class _Queued:
    body: dict[str, Any]
    estimate: int
    future: asyncio.Future[Outcome]


@dataclass
class BatchSettings:
    window: float
    max_requests: int
    poll_interval: float
    completion_window: str
    price_factor: float
    where: str  # "openai teacher (host)", for messages
    #: Where progress lines go: the run's log (a batch can take hours; silence looks like a hang).
    say: Callable[[str], None] = log.info


@dataclass
class BatchJobs:
    """Gathers requests into batches, submits them, polls them, and resolves each request's future.

    Lives on the teacher's event loop; everything here runs on that one thread."""

    client: Any
    ledger: Ledger
    budget: Budget
    settings: BatchSettings
    #: Called with (prompt, completion) tokens of each result, to count usage where the teacher does.
    on_usage: Callable[[int, int], None] = lambda p, c: None
    _queue: dict[str, _Queued] = field(default_factory=dict)
    _waiting: dict[str, _Queued] = field(default_factory=dict)  # asked and not answered yet
    _watchers: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # by file id
    _flusher: asyncio.Task[None] | None = None
    _reserved: dict[str, float] = field(default_factory=dict)  # by file id

    def ask(self, body: dict[str, Any], estimate: int) -> Awaitable[Outcome]:
        """The outcome of `body`: from the batch it was already sent in, or from a new one."""
        rid = custom_id(body)
        if rid in self._waiting:  # the same request twice at once: one line, one payment
            return asyncio.shield(self._waiting[rid].future)
        item = _Queued(body, estimate, asyncio.get_running_loop().create_future())
        self._waiting[rid] = item
        file_id = self.ledger.sent_in(rid)
        if file_id is not None:
            self._watch(file_id)
        else:
            self._queue[rid] = item
            self._flush_soon()
        return asyncio.shield(item.future)

    def _flush_soon(self) -> None:
        if self._queue and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_later())

    def forget(self, body: dict[str, Any]) -> None:
        """A caller that no longer wants an outcome (its stream was closed): a request not sent
        yet is not sent; one already sent stays in the ledger, for a resume to collect."""
        rid = custom_id(body)
        if self._queue.pop(rid, None) is not None:
            item = self._waiting.pop(rid)
            item.future.cancel()

    async def close(self) -> None:
        tasks = [t for t in [self._flusher, *self._watchers.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- submitting ------------------------------------------------------------------------

    async def _flush_later(self) -> None:
        """Wait until no request has arrived for `window` seconds, then submit what is queued."""
        try:
            seen = -1
            while len(self._queue) != seen and len(self._queue) < self.settings.max_requests:
                seen = len(self._queue)
                await asyncio.sleep(self.settings.window)
            while self._queue:
                if not await self._submit_some():
                    return  # waits for a running batch to release its budget; it flushes again
        except Exception as exc:  # the callers waiting on these requests raise it
            self._fail_queued(exc)

    def _fail_queued(self, exc: BaseException) -> None:
        for rid, item in list(self._queue.items()):
            self._queue.pop(rid)
            self._waiting.pop(rid, None)
            if not item.future.done():
                item.future.set_exception(exc)

    async def _submit_some(self) -> bool:
        """Submit one batch of queued requests; False when the budget holds them back for now."""
        reason = self.budget.exhausted()
        if reason:
            raise TeacherUnavailable(f"{self.settings.where}: {reason}")
        taken: dict[str, _Queued] = {}
        held = sum(self._reserved.values())
        factor = self.settings.price_factor
        for rid, item in self._queue.items():
            if len(taken) >= self.settings.max_requests:
                break
            if (taken or held) and not self.budget.fits(held + item.estimate, factor):
                break  # the rest wait for a batch to finish and show what it really cost
            taken[rid] = item
            held += item.estimate
        if not taken:
            return False
        for rid in taken:
            del self._queue[rid]
        estimate = float(sum(item.estimate for item in taken.values()))
        lines = [
            json.dumps({"custom_id": rid, "method": "POST", "url": ENDPOINT, "body": item.body})
            for rid, item in taken.items()
        ]
        data = ("\n".join(lines) + "\n").encode()
        uploaded = await self.client.files.create(file=("distill-batch.jsonl", data), purpose="batch")
        self.ledger.record({"file": uploaded.id, "ids": list(taken)})
        self._reserved[uploaded.id] = estimate
        await self._create(uploaded.id)
        self._watch(uploaded.id)
        return True

    async def _create(self, file_id: str) -> None:
        batch = await self.client.batches.create(
            input_file_id=file_id,
            endpoint=ENDPOINT,
            completion_window=self.settings.completion_window,
            metadata={"distill_file": file_id},
        )
        self.ledger.record({"file": file_id, "batch": batch.id})
        count = len(self.ledger.file_ids[file_id])
        self.settings.say(f"{self.settings.where}: batch {batch.id} submitted ({count} requests)")

    async def _adopt(self, file_id: str) -> str | None:
        """The batch made from `file_id` by a run killed before it wrote the batch down, if any.

        Looked for among the newest `ADOPT_SCAN` batches (listed newest first): it was created
        moments after its file, and a resume rarely comes after a thousand more batches."""
        seen = 0
        async for batch in self.client.batches.list(limit=100):
            if batch.input_file_id == file_id:
                self.ledger.record({"file": file_id, "batch": batch.id})
                return str(batch.id)
            seen += 1
            if seen >= ADOPT_SCAN:
                break
        return None

    # -- waiting ---------------------------------------------------------------------------

    def _watch(self, file_id: str) -> None:
        task = self._watchers.get(file_id)
        if task is None or task.done():
            self._watchers[file_id] = asyncio.create_task(self._follow(file_id))

    async def _follow(self, file_id: str) -> None:
        try:
            batch_id = self.ledger.batch_of_file.get(file_id) or await self._adopt(file_id)
            if batch_id is None:  # never batched, so never paid: send its requests again
                self.ledger.record({"abandoned": file_id})
                self._requeue(file_id)
                return
            batch = await self._poll(batch_id)
            outcomes = await self._outcomes(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # each request waiting on this batch reports it
            self._settle(file_id, {}, f"batch for file {file_id} could not be followed: {type(exc).__name__}: {exc}")
        else:
            self._settle(file_id, outcomes, f"batch {batch.id} ended {batch.status!r}{_errors(batch)}")
        self._reserved.pop(file_id, None)
        self._flush_soon()

    async def _poll(self, batch_id: str) -> Any:
        """The batch once it is final; a line for the log when its status changes, and at most
        once a minute while its count of answered requests grows."""
        said: tuple[str, int] | None = None
        last = 0.0
        while True:
            batch = await self.client.batches.retrieve(batch_id)
            counts = batch.request_counts
            done = (counts.completed + counts.failed) if counts is not None else 0
            now = time.monotonic()
            if said is None or batch.status != said[0] or (done != said[1] and now - last >= 60):
                total = f" ({done}/{counts.total} answered)" if counts is not None and counts.total else ""
                self.settings.say(f"{self.settings.where}: batch {batch_id} {batch.status}{total}")
                said, last = (batch.status, done), now
            if batch.status in FINAL:
                return batch
            await asyncio.sleep(self.settings.poll_interval)

    async def _outcomes(self, batch: Any) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        for file_id in (batch.error_file_id, batch.output_file_id):  # output last: it wins
            if not file_id:
                continue
            content = await self.client.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    rid, outcome = _parse_line(json.loads(line))
                    out[rid] = outcome
        return out

    def _settle(self, file_id: str, outcomes: dict[str, Outcome], missing: str) -> None:
        for rid in self.ledger.file_ids.get(file_id, []):
            if self.ledger.latest.get(rid) != file_id:
                continue  # sent again later, in another file
            item = self._waiting.pop(rid, None)
            if item is None or item.future.done():
                continue
            outcome = outcomes.get(rid) or Outcome(error=missing)
            if outcome.response is not None:
                usage = outcome.response.get("usage") or {}
                prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                self.budget.add(prompt, completion, price_factor=self.settings.price_factor)
                self.on_usage(prompt, completion)
            item.future.set_result(outcome)

    def _requeue(self, file_id: str) -> None:
        for rid in self.ledger.file_ids.get(file_id, []):
            item = self._waiting.get(rid)
            if item is not None and not item.future.done():
                self._queue[rid] = item
        self._flush_soon()


def _parse_line(line: dict[str, Any]) -> tuple[str, Outcome]:
    rid = str(line.get("custom_id"))
    response = line.get("response") or {}
    error = line.get("error")
    status = response.get("status_code")
    body = response.get("body")
    if not error and status == 200 and isinstance(body, dict) and body.get("choices"):
        return rid, Outcome(response=body)
    if error:
        detail = error.get("message") if isinstance(error, dict) else error
    elif isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = body["error"].get("message")
    else:
        detail = "no choices in the response"
    return rid, Outcome(error=f"HTTP {status}: {detail}" if status else str(detail))


def _errors(batch: Any) -> str:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    messages = [str(getattr(e, "message", e)) for e in errors[:3]]
    return f" ({'; '.join(messages)})" if messages else ""
