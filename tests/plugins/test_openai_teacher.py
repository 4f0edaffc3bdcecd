"""The OpenAI-compatible teacher against a real vLLM server, directly and through a faulty proxy.

One vLLM server serves the whole session (it takes ~40 s to start on CPU); each test that
needs failures puts its own `FaultProxy` in front of it, so every retried request still ends
in a real completion from a real model. The pacing tests put the proxy in front of a stub
upstream with a fixed latency instead, so what was waited can be told from what was served.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from distill.errors import PluginError, TeacherUnavailable
from distill.plugin import PluginContext
from distill.records import Message
from distill.teacher import ChatRequest

pytest.importorskip("openai")

from servers import FaultProxy, StubUpstream

from distill_plugins.teachers._api_retry import duration_seconds, retry_after_seconds, server_wait
from distill_plugins.teachers._api_support import Budget
from distill_plugins.teachers.openai import OpenAITeacher

pytestmark = pytest.mark.slow  # starts a vLLM OpenAI-compatible server

SECRET = "sk-test-DO-NOT-LEAK-4f9a1c2e"
ANSWER_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {
            "type": "object",
            "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
            "required": ["answer"],
            "additionalProperties": False,
        },
    },
}


def req(i: int, text: str | None = None, **kw) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content=text or f"Say something about number {i}.")], seed=1000 + i, **kw
    )


@pytest.fixture
def make_teacher(tmp_path: Path):
    """Teachers set up as a pipeline would, each closed at the end of the test."""
    made: list[OpenAITeacher] = []

    def make(base_url: str, model: str, state_dir: Path | None = None, **options) -> OpenAITeacher:
        options.setdefault("max_tokens", 12)
        teacher = OpenAITeacher(model=model, base_url=base_url, **options)
        teacher.setup(PluginContext(base_dir=tmp_path, progress=False, state_dir=state_dir))
        made.append(teacher)
        return teacher

    yield make
    for teacher in made:
        teacher.close()


# -- without a server ----------------------------------------------------------------------


def test_model_info_license_defaults_and_no_secrets_in_options(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    official = OpenAITeacher(model="gpt-4o-mini")
    official.setup(PluginContext(base_dir=Path(".")))
    assert official.model_info().license == "LicenseRef-OpenAI-Terms"
    assert OpenAITeacher(model="m", base_url="http://127.0.0.1:1/v1").model_info().license == "LicenseRef-Unspecified"
    assert OpenAITeacher(model="m", base_url="http://x/v1", license="Apache-2.0").model_info().license == "Apache-2.0"
    info = OpenAITeacher(model="m", revision="2024-07-18", base_url="http://u:pw@h/v1").model_info()
    assert (info.revision, info.file_hash) == ("2024-07-18", None)
    for shown in (repr(official), official.sampling(), official.model_info(), official.options.model_dump()):
        assert SECRET not in str(shown)
    assert "pw" not in repr(OpenAITeacher(model="m", base_url="http://u:pw@h/v1"))


def test_missing_key_and_key_pasted_as_env_name(monkeypatch):
    monkeypatch.delenv("DISTILL_NO_SUCH_KEY", raising=False)
    teacher = OpenAITeacher(model="m", api_key_env="DISTILL_NO_SUCH_KEY")
    with pytest.raises(PluginError, match="DISTILL_NO_SUCH_KEY is not set"):
        teacher.setup(PluginContext(base_dir=Path(".")))
    # A local server needs no key: the variable may be missing when base_url is set.
    OpenAITeacher(model="m", base_url="http://127.0.0.1:1/v1", api_key_env="DISTILL_NO_SUCH_KEY").setup(
        PluginContext(base_dir=Path("."))
    )
    with pytest.raises(ValueError) as err:
        OpenAITeacher.Options(model="m", api_key_env=SECRET)
    assert "NAME of an environment variable" in str(err.value)
    with pytest.raises(ValueError, match="needs price_per_1k_prompt"):
        OpenAITeacher.Options(model="m", max_cost_usd=1.0)


def test_retry_after_parsing():
    from email.utils import formatdate

    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert 3.0 <= retry_after_seconds({"retry-after": formatdate(time.time() + 5, usegmt=True)}) <= 5.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "99999"}) == 300.0
    assert retry_after_seconds({}) is None


def test_rate_limit_headers_say_whether_the_shared_limit_is_spent():
    assert [duration_seconds(v) for v in ("1s", "6m0s", "20ms", "1h2m3.5s", "0.5", "soon", None)] == [
        1.0,
        300.0,  # capped at MAX_RETRY_AFTER
        0.02,
        300.0,
        0.5,
        None,
        None,
    ]
    assert duration_seconds("1m30.5s") == 90.5
    own = server_wait({"retry-after": "2", "x-ratelimit-remaining-requests": "59"})
    assert (own.retry_after, own.limit_spent, own.named) == (2.0, False, 2.0)
    spent = server_wait(
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "2.5s",
        }
    )
    assert (spent.retry_after, spent.limit_spent, spent.reset, spent.named) == (None, True, 2.5, 2.5)
    # Retry-After wins over the reset; a reset of a limit that is not spent is not a wait.
    both = server_wait({"retry-after-ms": "700", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "9s"})
    assert (both.named, both.limit_spent) == (0.7, True)
    assert server_wait({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}).named is None
    assert server_wait(None).named is None


def test_rate_bucket_waits_and_token_split_sums_exactly():
    import asyncio

    from distill_plugins.teachers._api_support import TokenBucket, apportion

    async def spend() -> float:
        bucket = TokenBucket(per_minute=600)  # 10 a second, holds 100
        await bucket.acquire(100)
        started = time.monotonic()
        await bucket.acquire(5)  # empty: waits for half a second of refill
        bucket.correct(-50)  # a request billed less than estimated gives tokens back
        await bucket.acquire(40)
        return time.monotonic() - started

    assert 0.4 <= asyncio.run(spend()) < 1.0
    assert sum(apportion(10, [1, 1, 2])) == 10 and apportion(10, [0, 0]) == [5, 5]
    assert apportion(7, [3]) == [7] and apportion(0, [1, 2]) == [None, None]


def test_cost_budget_is_counted_and_persisted(tmp_path):
    budget = Budget(tmp_path, max_cost_usd=0.01, price_per_1k_prompt=1.0, price_per_1k_completion=2.0)
    budget.add(4, 2)
    assert budget.exhausted() is None
    budget.add(1, 1)
    assert (
        "budget spent: $0.0110"
        in Budget(tmp_path, max_cost_usd=0.01, price_per_1k_prompt=1.0, price_per_1k_completion=2.0).exhausted()
    )


# -- against the real server -----------------------------------------------------------------


def test_n_samples_logprobs_usage_and_seeded_determinism(vllm_server, make_teacher):
    base_url, model = vllm_server
    teacher = make_teacher(base_url, model, n=2, logprobs=True, temperature=1.0)
    out = teacher.generate([req(i) for i in range(4)])
    assert [len(s) for s in out] == [2, 2, 2, 2]
    for a, b in out:
        assert a.text != b.text  # the n samples of one request differ
        for s in (a, b):
            assert s.finish_reason in ("length", "stop")
            assert s.prompt_tokens and s.prompt_tokens > 5
            assert s.logprobs and len(s.logprobs) == s.completion_tokens <= 12
            assert all(lp <= 0 for lp in s.logprobs)
    assert teacher.usage.requests == 4
    assert teacher.usage.completion_tokens == sum(s.completion_tokens for pair in out for s in pair)
    assert teacher.usage.prompt_tokens == sum(pair[0].prompt_tokens for pair in out)
    assert teacher.sampling() == {
        "n": 2,
        "temperature": 1.0,
        "top_p": 0.95,
        "max_tokens": 12,
        "seed": 0,
        "logprobs": True,
    }
    again = make_teacher(base_url, model, n=2, temperature=1.0).generate([req(i) for i in range(4)])
    assert [[s.text for s in pair] for pair in again] == [[s.text for s in pair] for pair in out]
    other = make_teacher(base_url, model, n=2, temperature=1.0).generate([req(0).model_copy(update={"seed": 7})])
    assert other[0][0].text != out[0][0].text


def test_server_that_ignores_n_gets_one_request_per_sample(vllm_server, make_teacher):
    base_url, model = vllm_server
    with FaultProxy(base_url, ignore_n=True) as proxy:
        teacher = make_teacher(proxy.base_url, model, n=3, temperature=1.0)
        out = teacher.generate([req(i) for i in range(3)])
        assert [len(s) for s in out] == [3, 3, 3]
        assert all(len({s.text for s in samples}) == 3 for samples in out)
        first = proxy.reset_stats()
        teacher.generate([req(9)])
        assert proxy.stats.requests == 3 and proxy.stats.with_n == 0  # n is no longer sent
    assert first.requests >= 7  # at least one request sent n=3 before the teacher noticed


def test_iter_generate_yields_as_requests_complete(vllm_server, make_teacher):
    base_url, model = vllm_server
    with FaultProxy(base_url, delay_marker="SLOW", delay_seconds=2.0) as proxy:
        teacher = make_teacher(proxy.base_url, model, concurrency=8)
        started = time.monotonic()
        seen: list[tuple[int, float]] = []
        for i, samples in teacher.iter_generate([req(0, "SLOW one")] + [req(i) for i in range(1, 6)]):
            assert len(samples) == 1
            seen.append((i, time.monotonic() - started))
        assert seen[-1][0] == 0 and sorted(i for i, _ in seen) == list(range(6))
        assert all(t < 1.9 for _, t in seen[:-1])  # the fast ones arrived before the slow one ended

        # A request the server refuses (400: longer than max-model-len) fails the batch, but
        # only after the ones that completed meanwhile were handed over.
        too_long = req(0, "SLOW " + "word " * 900)
        got: list[int] = []
        with pytest.raises(PluginError, match=r"HTTP 400") as err:
            for i, _ in teacher.iter_generate([too_long] + [req(i) for i in range(1, 6)]):
                got.append(i)
        assert sorted(got) == [1, 2, 3, 4, 5]
        assert not isinstance(err.value, TeacherUnavailable)


def test_concurrency_is_bounded(vllm_server, make_teacher):
    base_url, model = vllm_server
    with FaultProxy(base_url, delay_marker="user", delay_seconds=0.3) as proxy:
        out = make_teacher(proxy.base_url, model, concurrency=3).generate([req(i) for i in range(12)])
        assert len(out) == 12
        assert proxy.stats.max_in_flight == 3


def test_thirty_percent_faults_every_request_answered(vllm_server, make_teacher):
    base_url, model = vllm_server
    with FaultProxy(base_url, rate=0.3, seed=7, hang_seconds=2.5, retry_after="1") as proxy:
        teacher = make_teacher(proxy.base_url, model, concurrency=8, timeout=1.5, backoff_base=0.05, backoff_max=0.5)
        out = teacher.generate([req(i) for i in range(40)])
        assert all(len(samples) == 1 and samples[0].completion_tokens for samples in out)
        stats = proxy.stats
        assert stats.faults_injected > 0 and stats.requests >= 40 + stats.faults_injected
        assert len(stats.faults) >= 3, stats.faults  # several kinds really happened
        assert teacher.usage.requests == 40


def test_circuit_breaker_opens_when_everything_fails(vllm_server, make_teacher):
    base_url, model = vllm_server
    with FaultProxy(base_url, rate=1.0, kinds=("500",)) as proxy:
        teacher = make_teacher(
            proxy.base_url, model, concurrency=2, circuit_breaker=3, max_retries=1, backoff_base=0.01
        )
        with pytest.raises(TeacherUnavailable) as err:
            teacher.generate([req(i) for i in range(30)])
        message = str(err.value)
        host = proxy.base_url.split("//")[1].split("/")[0]
        assert "openai teacher" in message and host in message and "circuit breaker open after 3" in message
        assert "HTTP 500" in message
        assert proxy.stats.requests <= (3 + 2) * 2  # stopped, instead of trying all 30


def test_budget_cap_survives_a_new_instance(vllm_server, make_teacher, tmp_path):
    base_url, model = vllm_server
    state = tmp_path / "state"
    with FaultProxy(base_url) as proxy:
        teacher = make_teacher(proxy.base_url, model, state_dir=state, max_total_tokens=200, concurrency=4)
        got: list[int] = []
        with pytest.raises(TeacherUnavailable, match="budget spent"):
            for i, _ in teacher.iter_generate([req(i) for i in range(20)]):
                got.append(i)
        saved = json.loads((state / Budget.FILE).read_text())
        assert 0 < len(got) < 20 and saved["requests"] == len(got)
        per_request = saved["total_tokens"] / saved["requests"]
        assert 200 <= saved["total_tokens"] <= 200 + per_request  # stops within one request of the cap
        sent = proxy.stats.requests

        resumed = make_teacher(proxy.base_url, model, state_dir=state, max_total_tokens=200)
        with pytest.raises(TeacherUnavailable, match="budget spent"):
            resumed.generate([req(50)])
        assert proxy.stats.requests == sent  # nothing more was paid for
        assert make_teacher(proxy.base_url, model, state_dir=state, max_total_tokens=10_000).generate([req(51)])


def test_rejected_key_is_named_but_never_shown(vllm_server, make_teacher, monkeypatch, caplog, tmp_path):
    base_url, model = vllm_server
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    state = tmp_path / "state"
    with FaultProxy(base_url, require_key="the-right-key") as proxy:
        teacher = make_teacher(proxy.base_url, model, state_dir=state, api_key_env="DISTILL_TEST_KEY")
        with pytest.raises(PluginError) as err:
            teacher.generate([req(0)])
        assert proxy.stats.faults["401"] == 1  # not retried
        message = str(err.value)
        assert "$DISTILL_TEST_KEY" in message and "401" in message
        for shown in (message, repr(err.value), repr(teacher), teacher.sampling(), teacher.model_info(), caplog.text):
            assert SECRET not in str(shown)

        monkeypatch.setenv("DISTILL_TEST_KEY", "the-right-key")  # the key really is sent
        ok = make_teacher(proxy.base_url, model, state_dir=state, api_key_env="DISTILL_TEST_KEY")
        assert ok.generate([req(1)])[0][0].completion_tokens
    for path in state.rglob("*"):
        assert SECRET not in path.read_text()


def test_response_format_gives_json_and_falls_back_when_refused(vllm_server, make_teacher):
    base_url, model = vllm_server
    teacher = make_teacher(base_url, model, max_tokens=32, temperature=1.0)
    out = teacher.generate([req(i, "Answer yes or no.", response_format=ANSWER_SCHEMA) for i in range(3)])
    for (sample,) in out:
        assert json.loads(sample.text)["answer"] in ("yes", "no")

    with FaultProxy(base_url, reject_response_format=True) as proxy:
        teacher = make_teacher(proxy.base_url, model, max_tokens=8)
        first = teacher.generate([req(0, response_format=ANSWER_SCHEMA)])
        assert first[0][0].completion_tokens  # answered, without the format
        teacher.generate([req(i, response_format=ANSWER_SCHEMA) for i in range(1, 4)])
        assert proxy.stats.with_response_format == 1  # tried once, then remembered
        assert proxy.stats.requests == 5


def test_replicas_share_the_teachers_limits_and_what_is_left_of_its_budget(tmp_path):
    """executor: ray runs one replica per actor: together they keep the teacher's totals."""
    state = tmp_path / "state"
    teacher = OpenAITeacher(
        model="m",
        base_url="http://127.0.0.1:1/v1",
        concurrency=5,
        requests_per_minute=60,
        tokens_per_minute=9000,
        max_total_tokens=1000,
    )
    teacher.setup(PluginContext(base_dir=tmp_path, progress=False, state_dir=state))
    shares = [teacher.replica_options(i, 2) for i in range(2)]
    assert [o.concurrency for o in shares] == [3, 2]
    assert [o.requests_per_minute for o in shares] == [30, 30] and shares[0].tokens_per_minute == 4500
    assert [o.max_total_tokens for o in shares] == [500, 500]
    assert teacher.options.concurrency == 5  # the teacher's own options are untouched
    # Spent before: 100 tokens locally, 300 by replica 0 under an earlier run with 3 actors.
    Budget(state).add(60, 40)
    Budget(state / "replica-0").add(200, 100)
    shares = [teacher.replica_options(i, 2) for i in range(2)]
    assert [o.max_total_tokens for o in shares] == [300 + 300, 300]  # own spend + half of the 600 left
    with pytest.raises(PluginError, match="concurrency 5 cannot be shared by 6 Ray actors"):
        teacher.replica_options(0, 6)


# -- pacing: what a 429 makes whom wait (stub upstream with a known latency) ------------------

LIMIT_SPENT = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1s",
}


@pytest.fixture
def stub():
    with StubUpstream(latency=0.05) as upstream:
        yield upstream


def _answered_between(proxy: FaultProxy, start: float, end: float) -> int:
    return sum(start < t < end for t in proxy.stats.answered_at)


@pytest.mark.parametrize(
    ("retry_after", "headers", "lowest", "highest"),
    [
        ("1", None, 1.0, 1.0),
        ("date", None, 0.0, 1.0),  # an HTTP date one second ahead, whole seconds: 0-1 s from now
        ("5", {"retry-after-ms": "600"}, 0.6, 0.6),  # the precise form wins
    ],
    ids=["seconds", "http-date", "ms"],
)
def test_a_refused_request_waits_what_was_named_while_the_others_go_on(
    stub, make_teacher, retry_after, headers, lowest, highest
):
    with FaultProxy(stub.base_url, refuse_marker="LIMITED", retry_after=retry_after, limit_headers=headers) as proxy:
        teacher = make_teacher(proxy.base_url, stub.model, concurrency=4)
        arrived: dict[int, float] = {}
        for i, samples in teacher.iter_generate([req(0, "LIMITED one")] + [req(i) for i in range(1, 41)]):
            arrived[i] = time.monotonic()
            assert samples[0].text.startswith("stub answer")
        p = teacher.pacing
        assert sorted(arrived) == list(range(41)) and proxy.stats.faults["429"] == 1
        assert (p.refusals, p.calls_paused, p.backoff_count) == (1, 1, 0)
        assert lowest - 0.01 <= p.requested_seconds <= highest + 0.01
        # It waited what was named, once, and nobody else waited at all.
        assert p.own_wait_seconds == pytest.approx(p.requested_seconds, abs=0.05)
        assert p.max_call_wait_seconds == pytest.approx(p.own_wait_seconds, abs=0.01)
        assert (p.shared_pauses, p.shared_wait_seconds) == (0, 0.0)
        refused = proxy.stats.refused_at[0]
        assert arrived[0] - refused >= p.requested_seconds - 0.01
        if p.requested_seconds >= 1.0:  # 40 answers of 50 ms on 3 free slots fit in the window
            assert _answered_between(proxy, refused, refused + p.requested_seconds) >= 20


def test_many_refusals_each_wait_only_their_own(stub, make_teacher):
    """30% of attempts refused with Retry-After: 1: what is waited is what was asked, no more."""
    with FaultProxy(stub.base_url, rate=0.3, kinds=("429",), seed=3, retry_after="1") as proxy:
        teacher = make_teacher(proxy.base_url, stub.model, concurrency=8, max_retries=30)
        assert len(teacher.generate([req(i) for i in range(60)])) == 60
        p = teacher.pacing
        assert p.refusals == proxy.stats.faults["429"] > 5
        assert p.requested_seconds == float(p.refusals)
        assert p.shared_pauses == 0 and p.shared_wait_seconds == 0.0
        assert p.requested_seconds <= p.paused_seconds <= p.requested_seconds + 0.05 * p.refusals


def test_a_spent_shared_limit_pauses_everyone_once_not_stacked(stub, make_teacher):
    """Three requests are refused at once, a fourth (sent before the pause began) half a second
    later, all saying the shared limit is spent: one pause of the named second for everyone,
    which the late refusal from the same window does not extend."""
    with FaultProxy(
        stub.base_url,
        refuse_marker="LIMIT",
        retry_after="1",
        limit_headers=LIMIT_SPENT,
        delay_marker="LIMIT late",
        delay_seconds=0.5,
    ) as proxy:
        teacher = make_teacher(proxy.base_url, stub.model, concurrency=8)
        requests = [req(i, f"LIMIT now {i}") for i in range(3)] + [req(3, "LIMIT late")]
        requests += [req(i) for i in range(4, 40)]
        assert len(teacher.generate(requests)) == 40
        p = teacher.pacing
        first, late = proxy.stats.refused_at[0], proxy.stats.refused_at[-1]
        assert proxy.stats.faults["429"] == 4 and late - first >= 0.45
        assert (p.refusals, p.shared_refusals, p.shared_pauses) == (4, 4, 1)
        assert p.shared_pause_seconds == 1.0
        assert p.shared_wait_seconds > 0  # requests not refused waited for the window too
        # Nobody waited more than the named second: a refusal's own wait and the window overlap.
        assert p.max_call_wait_seconds < 1.0 + 0.3
        # Everyone was paused: nothing was answered inside the window but what was in flight...
        assert _answered_between(proxy, first + 0.3, first + 0.95) == 0
        # ...and it was not extended by the late refusal: the others went on after one second
        # while the late request still waited its own second.
        assert _answered_between(proxy, first + 1.0, late + 0.95) >= 5


def test_overlapping_calls_share_one_semaphore_and_one_retry_policy(stub, make_teacher):
    """Batches streamed from several threads at once run on the teacher's one loop: together
    they keep to `concurrency`, and their refusals are counted by one policy."""
    import threading

    with FaultProxy(
        stub.base_url, refuse_marker="LIMITED", retry_after="1", delay_marker="user", delay_seconds=0.1
    ) as proxy:
        teacher = make_teacher(proxy.base_url, stub.model, concurrency=3)
        got: dict[str, list[int]] = {}

        def stream(name: str) -> None:
            batch = [req(0, f"LIMITED {name}")] + [req(i, f"{name} {i}") for i in range(1, 10)]
            got[name] = sorted(i for i, _ in teacher.iter_generate(batch))

        threads = [threading.Thread(target=stream, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert got == {"a": list(range(10)), "b": list(range(10))}
        assert proxy.stats.max_in_flight <= 3
        p = teacher.pacing
        assert (p.refusals, p.shared_pauses, p.calls) == (2, 0, 20)
        assert p.own_wait_seconds == pytest.approx(2.0, abs=0.1)
