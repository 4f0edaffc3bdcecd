"""A teacher behind any OpenAI-compatible chat API: OpenAI itself, a vLLM or llama.cpp server.

Remote calls fail in ways local ones do not, so this teacher owns its retries rather than
trusting the client's: it needs to count failures for a circuit breaker, pace requests to a
rate limit, charge a budget that survives resume, and hand back each result the moment it
arrives so that the core caches it before anything else can go wrong. Requests run on one
long-lived asyncio loop in a background thread (the HTTP connections stay open across
batches); `iter_generate` is a plain generator fed from it through a queue, and calls that
overlap share that loop, its semaphore and one retry policy. A 429 makes the refused request
wait what the server named; the others wait only when the server says the limit they share
is spent, once per window (see _api_retry).

The API key is read from the environment variable that `api_key_env` names, at setup. It is
never an option, and every message this module raises is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from distill.errors import PluginError, TeacherUnavailable
from distill.hookspecs import hookimpl
from distill.models.folders import SAMPLING_FIELDS
from distill.plugin import PluginContext
from distill.seeding import derive_seed
from distill.teacher import ChatRequest, ModelInfo, Sample, Teacher, in_order
from distill_plugins.teachers._api_batch import BatchJobs, BatchSettings, Ledger, Outcome, request_body
from distill_plugins.teachers._api_replicas import replica_options
from distill_plugins.teachers._api_retry import (
    CallState,
    OutOfRetries,
    PauseStats,
    Retryable,
    RetryAtOnce,
    RetryPolicy,
    server_wait,
)
from distill_plugins.teachers._api_support import (
    Budget,
    LoopThread,
    TokenBucket,
    TokenEstimator,
    chat_samples,
    emit_as_completed,
    error_message,
)
from distill_plugins.teachers._openai_options import OpenAIOptions

OPENAI_URL = "https://api.openai.com/v1"
_FORMAT_REFUSED = re.compile(r"response_format|json_schema|guided|structured", re.I)


class _RequestFailed(Exception):
    """A request used up its retries; the batch goes on, the breaker counts it."""


class OpenAITeacher(Teacher):
    """Samples completions from an OpenAI-compatible `/chat/completions` endpoint."""

    name = "openai"
    requires = ("api",)

    Options = OpenAIOptions

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._key: str | None = None
        self._client: Any = None
        self._runner: LoopThread | None = None
        self._starting = threading.Lock()
        self._sem: asyncio.Semaphore | None = None
        self._budget: Budget | None = None
        self._rpm = TokenBucket(self.options.requests_per_minute) if self.options.requests_per_minute else None
        self._tpm = TokenBucket(self.options.tokens_per_minute) if self.options.tokens_per_minute else None
        self._estimator = TokenEstimator()
        # One policy for every request of this teacher: batches streaming at once share its window.
        self._retry = RetryPolicy(self.options.backoff_base, self.options.backoff_max)
        self._failures = 0  # consecutive requests that used up their retries
        self._send_response_format = self.options.use_response_format
        self._n_supported = True
        self._jobs: BatchJobs | None = None

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.options.model!r}, host={self._host()!r})"

    @property
    def pacing(self) -> PauseStats:
        """What servers asked this teacher to wait and what it waited (see _api_retry)."""
        return self._retry.stats

    # -- identity --------------------------------------------------------------------------

    def _host(self) -> str:
        """Host (and port) only: a URL may carry credentials, which must not reach messages."""
        parts = urlsplit(self.options.base_url or OPENAI_URL)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host

    def model_info(self) -> ModelInfo:
        opts = self.options
        license = opts.license
        if license is None:
            official = opts.base_url is None or "openai" in self._host().lower()
            license = "LicenseRef-OpenAI-Terms" if official else "LicenseRef-Unspecified"
        return ModelInfo(model=opts.model, revision=opts.revision, file_hash=None, license=license)

    def sampling(self) -> dict[str, Any]:
        out = self.options.model_dump(include=SAMPLING_FIELDS)
        if self.options.logprobs:  # samples then carry logprobs: cached ones without must not match
            out["logprobs"] = True
        return out

    def cost_usd(self) -> float | None:
        """What the budget charged, across resumes (live and batch prices): None without prices."""
        o = self.options
        if self._budget is None or o.price_per_1k_prompt is None or o.price_per_1k_completion is None:
            return None
        return self._budget.spent.cost_usd

    def requests_in_flight(self) -> int:
        """Every call shares the one loop and semaphore: overlapping calls keep `concurrency` busy.
        In batch mode a whole batch is in flight: the core's chunks are gathered into it."""
        return self.options.batch_max_requests if self.options.batch else self.options.concurrency

    def replica_options(self, index: int, count: int) -> OpenAIOptions:
        """Concurrency, rate limits and spend caps are the teacher's totals: split (see _api_replicas)."""

        context = getattr(self, "context", None)
        return replica_options(self.options, index, count, getattr(context, "state_dir", None), self.name)

    # -- lifecycle -------------------------------------------------------------------------

    def setup(self, context: PluginContext) -> None:
        """Read the key and the spent budget now, so a missing key stops the run before its
        stage starts rather than on the first batch."""
        super().setup(context)
        self._read_key()
        # A spent budget is only reported when a request would be sent: a resumed stage whose
        # remaining requests are all in the cache still completes.
        self._budget = self._new_budget(context)

    def _new_budget(self, context: PluginContext | None) -> Budget:
        o = self.options
        return Budget(
            context.state_dir if context else None,
            max_total_tokens=o.max_total_tokens,
            max_cost_usd=o.max_cost_usd,
            price_per_1k_prompt=o.price_per_1k_prompt,
            price_per_1k_completion=o.price_per_1k_completion,
        )

    def _read_key(self) -> None:
        env = self.options.api_key_env
        key = os.environ.get(env)
        if not key:
            if self.options.base_url is None:
                raise PluginError(
                    f"openai teacher: the environment variable {env} is not set; export your "
                    "API key there (or set `api_key_env` to the variable that holds it)"
                )
            key = "EMPTY"  # a local server without authentication still wants the header
        self._key = key

    def _scrub(self, text: str) -> str:
        key = self._key
        return text.replace(key, "***") if key and len(key) >= 4 else text

    def _start(self) -> LoopThread:
        with self._starting:  # overlapping calls may arrive on several threads at once
            return self._runner or self._start_loop()

    def _start_loop(self) -> LoopThread:
        if self._key is None:
            self._read_key()
        if self._budget is None:
            self._budget = self._new_budget(getattr(self, "context", None))
        try:
            import openai
        except ImportError as exc:
            raise PluginError("openai teacher needs the openai client: pip install 'distill[api]'") from exc
        runner = LoopThread("distill-openai")

        async def make() -> None:  # the client's connection pool belongs to this loop
            self._client = openai.AsyncOpenAI(
                api_key=self._key,
                base_url=self.options.base_url or OPENAI_URL,
                max_retries=0,
                timeout=self.options.timeout,
            )
            self._sem = asyncio.Semaphore(self.options.concurrency)
            if self.options.batch:
                self._jobs = self._batch_jobs()

        runner.run(make())
        self._runner = runner
        return runner

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._client is not None:
            try:
                if self._jobs is not None:
                    runner.run(self._jobs.close(), timeout=10)
                runner.run(self._client.close(), timeout=10)
            except Exception:
                pass
        runner.stop()
        self._client = self._sem = self._jobs = None

    # -- generating ------------------------------------------------------------------------

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:
        return in_order(requests, self.iter_generate(requests))

    def iter_generate(self, requests: list[ChatRequest]) -> Iterator[tuple[int, list[Sample]]]:
        """Yield each request's samples as it completes; when the batch fails, everything that
        completed before has been yielded by the time the error is raised."""
        if not requests:
            return
        yield from self._start().stream(lambda emit: self._run_batch(requests, emit))

    async def _run_batch(self, requests: list[ChatRequest], emit: Callable[[Any], None]) -> None:
        ask = self._batched if self.options.batch else self._request
        tasks = [asyncio.create_task(ask(i, r)) for i, r in enumerate(requests)]
        failed = await emit_as_completed(tasks, emit, _RequestFailed)
        if failed and self.options.batch and self.options.batch_failures == "report":
            reasons = sorted({str(f) for f in failed})
            raise TeacherUnavailable(
                f"openai teacher ({self._host()}): {len(failed)} of {len(requests)} requests were not answered "
                f"by their batch (batch_failures: report): {'; '.join(reasons[:3])}"
            )
        if failed:
            raise TeacherUnavailable(
                f"openai teacher ({self._host()}): {len(failed)} of {len(requests)} "
                f"requests failed after {self.options.max_retries + 1} attempts each; "
                f"last error: {failed[-1]}"
            )

    async def _request(self, i: int, req: ChatRequest) -> tuple[int, list[Sample]]:
        n = req.n or self.options.n
        seed = req.seed if req.seed is not None else self.options.seed
        assert self._sem is not None
        async with self._sem:  # held through back-off too, so a dead server sees few requests
            return i, await self._samples_for(req, n, seed)

    async def _samples_for(self, req: ChatRequest, n: int, seed: int, got: list[Sample] | None = None) -> list[Sample]:
        samples: list[Sample] = list(got or [])
        if not samples and (n == 1 or self._n_supported):
            samples = await self._call(req, n, seed)
            if len(samples) < n:
                self._n_supported = False  # remembered: later requests go one sample at a time
        while len(samples) < n:  # the server ignores `n`: one request per missing sample
            k = len(samples)
            samples.extend(await self._call(req, 1, seed if k == 0 else derive_seed(seed, k, bits=31)))
        self.usage.requests += 1
        return samples[:n]

    # -- the Batch API -----------------------------------------------------------------------

    def _batch_jobs(self) -> BatchJobs:
        o = self.options
        assert self._budget is not None

        def count(prompt: int, completion: int) -> None:
            self.usage.prompt_tokens += prompt
            self.usage.completion_tokens += completion

        settings = BatchSettings(
            window=o.batch_window,
            max_requests=o.batch_max_requests,
            poll_interval=o.batch_poll_seconds,
            completion_window=o.batch_completion_window,
            price_factor=o.batch_price_factor,
            where=f"openai teacher ({self._host()})",
        )
        context = getattr(self, "context", None)
        if context is not None and context.log is not None:
            settings.say = context.log
        state = getattr(context, "state_dir", None)
        return BatchJobs(self._client, Ledger(state), self._budget, settings, on_usage=count)

    async def _batched(self, i: int, req: ChatRequest) -> tuple[int, list[Sample]]:
        """One request through a batch; what the batch does not answer goes live or is reported."""
        n = req.n or self.options.n
        seed = req.seed if req.seed is not None else self.options.seed
        body = request_body(self._kwargs(req, n, seed))
        estimate, raw = self._estimator.estimate(req.messages, self.options.max_tokens, n)
        assert self._jobs is not None
        try:
            outcome = await self._jobs.ask(body, estimate)
        except asyncio.CancelledError:
            self._jobs.forget(body)
            raise
        samples, error = self._batch_samples(outcome, raw)
        if len(samples) >= n:
            self.usage.requests += 1
            return i, samples[:n]
        if self.options.batch_failures == "report":
            raise _RequestFailed(self._scrub(error or f"{len(samples)} of {n} samples"))
        assert self._sem is not None
        async with self._sem:
            return i, await self._samples_for(req, n, seed, samples)

    def _batch_samples(self, outcome: Outcome, raw: float) -> tuple[list[Sample], str | None]:
        from openai.types.chat import ChatCompletion
        from pydantic import ValidationError

        if outcome.response is None:
            return [], outcome.error
        try:
            parsed = chat_samples(ChatCompletion.model_validate(outcome.response))
        except ValidationError as exc:
            return [], f"malformed response in the batch output ({exc.error_count()} errors)"
        if parsed is None:
            return [], "no choices in the batch output"
        self._estimator.observe(raw, parsed[1])
        return parsed[0], None

    def _kwargs(self, req: ChatRequest, n: int, seed: int) -> dict[str, Any]:
        o = self.options
        kwargs: dict[str, Any] = {
            "model": o.model,
            "messages": [{"role": m.role, "content": m.content} for m in req.messages],
            "temperature": o.temperature,
            "top_p": o.top_p,
            "max_tokens": o.max_tokens,
            "seed": seed,
        }
        if n > 1:
            kwargs["n"] = n
        if o.logprobs:
            kwargs["logprobs"] = True
        if req.response_format is not None and self._send_response_format:
            kwargs["response_format"] = req.response_format
        if req.continue_final and req.messages and req.messages[-1].role != "assistant":
            raise PluginError(
                "openai teacher: a request to write the user's turn (Magpie) needs the model's chat "
                "template, which an API applies itself; use a local teacher (transformers or vllm)"
            )
        if req.messages and req.messages[-1].role == "assistant":
            # Continue the final assistant message (a task's answer prefix): vLLM's and SGLang's
            # servers take these; an API without prefill rejects the request, which names the field.
            kwargs["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        return kwargs

    async def _call(self, req: ChatRequest, n: int, seed: int) -> list[Sample]:
        """One API call with retries; counts toward the breaker only once its retries are spent."""
        o = self.options
        estimate, raw = self._estimator.estimate(req.messages, o.max_tokens, n)
        try:
            samples = await self._retry.run(
                lambda call: self._attempt(self._kwargs(req, n, seed), estimate, raw, call), o.max_retries
            )
        except OutOfRetries as exc:
            self._failures += 1
            if self._failures >= o.circuit_breaker:
                raise TeacherUnavailable(
                    f"openai teacher ({self._host()}, model {o.model!r}): circuit breaker open after "
                    f"{self._failures} consecutive requests failed {o.max_retries + 1} attempts each; "
                    f"last error: {exc}"
                ) from None
            raise _RequestFailed(str(exc)) from None
        self._failures = 0
        return samples

    async def _attempt(self, kwargs: dict[str, Any], estimate: int, raw: float, call: CallState) -> list[Sample]:
        import openai

        assert self._budget is not None
        if self._rpm:
            await self._rpm.acquire(1)
        if self._tpm:
            await self._tpm.acquire(estimate)
        reason = await self._budget.reserve(estimate)
        if reason:
            raise TeacherUnavailable(f"openai teacher ({self._host()}): {reason}")
        try:
            call.sent()
            response = await asyncio.wait_for(self._client.chat.completions.create(**kwargs), self.options.timeout + 1)
        except openai.APIStatusError as exc:
            raise self._status_error(exc, kwargs) from None
        except (TimeoutError, openai.APIConnectionError) as exc:  # incl. APITimeoutError
            cause = exc.__cause__
            detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
            raise Retryable(self._scrub(f"{type(exc).__name__}: {str(exc) or 'timed out'}{detail}")) from None
        except (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError) as exc:
            raise Retryable(f"malformed response body ({type(exc).__name__})") from None
        finally:
            self._budget.release(estimate)
        return self._samples(response, estimate, raw)

    def _status_error(self, exc: Any, kwargs: dict[str, Any]) -> Exception:
        code = exc.status_code
        message = self._scrub(error_message(exc))
        if code in (408, 409, 429) or code >= 500:
            return Retryable(f"HTTP {code}: {message}", server_wait(exc.response.headers))
        if code == 400 and "response_format" in kwargs and _FORMAT_REFUSED.search(message):
            self._send_response_format = False  # sent again at once without it; not a failed attempt
            return RetryAtOnce()
        where = f"openai teacher ({self._host()}, model {self.options.model!r})"
        if code == 401:
            return PluginError(f"{where}: the API key in ${self.options.api_key_env} was rejected (HTTP 401)")
        if code == 403:
            return PluginError(f"{where}: access denied (HTTP 403): {message}")
        if code == 404:
            return PluginError(f"{where}: not found (HTTP 404), check `model` and `base_url`: {message}")
        return PluginError(f"{where}: request rejected (HTTP {code}): {message}")

    def _samples(self, response: Any, estimate: int, raw: float) -> list[Sample]:
        parsed = chat_samples(response)
        if parsed is None:
            raise Retryable(f"malformed response (no choices in a {type(response).__name__})")
        samples, prompt, completion = parsed
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion
        assert self._budget is not None
        self._budget.add(prompt, completion)
        self._estimator.observe(raw, prompt)
        if self._tpm:
            self._tpm.correct(prompt + completion - estimate)
        return samples


@hookimpl
def register_teachers(register: Any) -> None:
    register(OpenAITeacher)
