"""The `openai` teacher's Batch API path, with the real `openai` client against a local Files +
Batches endpoint (tests/batch_endpoint.py).

The fast tests answer batches with a stub engine; the slow one answers them with vLLM's own
batch runner on the tiny model. Both kill tests SIGKILL a real `distill run` while its batch
is pending and count, at the endpoint, what was uploaded, batched and answered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import distill
from distill.errors import TeacherUnavailable
from distill.plugin import PluginContext
from distill.records import Message
from distill.teacher import ChatRequest

pytest.importorskip("openai")

from batch_endpoint import BatchEndpoint, stub_answer, stub_engine, vllm_engine

from distill_plugins.teachers._api_batch import Ledger
from distill_plugins.teachers.openai import OpenAITeacher

FAST = {"batch": True, "batch_window": 0.2, "batch_poll_seconds": 0.05, "max_tokens": 10}


def ask(i: int, text: str | None = None) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text or f"question {i}")], seed=100 + i)


@pytest.fixture
def make_teacher(tmp_path: Path):
    made: list[OpenAITeacher] = []

    def make(endpoint: BatchEndpoint, state: Path | None = None, **options) -> OpenAITeacher:
        teacher = OpenAITeacher(model="m", base_url=endpoint.base_url, **{**FAST, **options})
        teacher.setup(PluginContext(base_dir=tmp_path, progress=False, state_dir=state or tmp_path / "state"))
        made.append(teacher)
        return teacher

    yield make
    for teacher in made:
        teacher.close()


def test_overlapping_calls_become_one_batch_charged_at_the_batch_price(make_teacher, tmp_path):
    with BatchEndpoint(stub_engine()) as endpoint:
        teacher = make_teacher(endpoint, price_per_1k_prompt=1.0, price_per_1k_completion=2.0, n=2)
        chunks = [[ask(i) for i in range(k * 4, k * 4 + 4)] for k in range(3)]  # the core's chunks
        results: dict[int, list] = {}

        def call(k: int) -> None:
            results[k] = teacher.generate(chunks[k])

        threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert (endpoint.uploads, endpoint.created, endpoint.live_calls) == (1, 1, 0)
        assert sorted(endpoint.answered.values()) == [1] * 12
        (batch,) = endpoint.batches.values()
        sent = {
            line["body"]["messages"][-1]["content"]: line["body"] for line in endpoint.lines(batch["input_file_id"])
        }
        for k, chunk in results.items():
            for req, samples in zip(chunks[k], chunk):
                body = sent[req.messages[-1].content]
                assert body["seed"] == req.seed and body["n"] == 2 and body["model"] == "m"
                assert [s.text for s in samples] == [c["message"]["content"] for c in stub_answer(body)["choices"]]
        budget = json.loads((tmp_path / "state" / "api-budget.json").read_text())
        # 12 answers of 10 prompt + 2 x 5 completion tokens, at half of $1 / $2 per 1k.
        assert (budget["prompt_tokens"], budget["completion_tokens"]) == (120, 120)
        assert budget["cost_usd"] == pytest.approx((120 * 1.0 + 120 * 2.0) / 1000 * 0.5)
        assert teacher.usage.requests == 12


def test_what_a_batch_does_not_answer_goes_live_or_is_reported(make_teacher, tmp_path):
    def flaky(body: dict) -> bool:
        return body["messages"][-1]["content"] in ("question 1", "question 4")

    with BatchEndpoint(stub_engine(flaky)) as endpoint:
        teacher = make_teacher(endpoint)
        out = teacher.generate([ask(i) for i in range(6)])
        assert endpoint.live_calls == 2 and endpoint.created == 1
        assert all(len(samples) == 1 for samples in out)

    with BatchEndpoint(stub_engine(flaky)) as endpoint:
        teacher = make_teacher(endpoint, state=tmp_path / "report", batch_failures="report")
        got = []
        with pytest.raises(TeacherUnavailable, match=r"2 of 6 requests.*HTTP 500: engine overloaded"):
            for item in teacher.iter_generate([ask(i) for i in range(6)]):
                got.append(item[0])
        assert sorted(got) == [0, 2, 3, 5] and endpoint.live_calls == 0


def test_a_batch_made_but_not_written_down_is_found_not_paid_again(make_teacher, tmp_path):
    """Killed between creating the batch and recording it: the ledger has the file only."""
    import openai

    requests = [ask(i) for i in range(3)]
    with BatchEndpoint(stub_engine()) as endpoint:
        first = make_teacher(endpoint, state=tmp_path / "first").generate(requests)
        ledger = (tmp_path / "first" / Ledger.FILE).read_text().splitlines()
        assert [sorted(json.loads(x)) for x in ledger] == [["file", "ids"], ["batch", "file"]]
        for name in ("adopt", "orphan"):
            (tmp_path / name).mkdir()
            (tmp_path / name / Ledger.FILE).write_text(ledger[0] + "\n")  # as if killed before line 2

        again = make_teacher(endpoint, state=tmp_path / "adopt").generate(requests)
        assert (endpoint.uploads, endpoint.created, endpoint.live_calls) == (1, 1, 0)
        assert [s[0].text for s in again] == [s[0].text for s in first]
        assert json.loads((tmp_path / "adopt" / Ledger.FILE).read_text().splitlines()[1])["batch"]

        # A file that never became a batch was never paid for: its requests are sent anew.
        del endpoint.batches[json.loads(ledger[1])["batch"]]
        orphan = make_teacher(endpoint, state=tmp_path / "orphan").generate(requests)
        assert (endpoint.uploads, endpoint.created) == (2, 2)
        assert [s[0].text for s in orphan] == [s[0].text for s in first]
        assert "abandoned" in (tmp_path / "orphan" / Ledger.FILE).read_text()
        assert openai  # the client under test is the real one (imported by the teacher)


def test_a_budget_cap_holds_back_what_would_not_fit(make_teacher):
    """Each request is estimated at ~19 tokens and costs 15: 60 tokens buy a batch of three,
    then one more request, then the run stops, reporting the budget."""
    with BatchEndpoint(stub_engine()) as endpoint:
        teacher = make_teacher(endpoint, max_total_tokens=60)
        got = []
        with pytest.raises(TeacherUnavailable, match="budget spent: 60 of max_total_tokens=60"):
            for i, _ in teacher.iter_generate([ask(i, f"q{i}") for i in range(6)]):
                got.append(i)
        assert sorted(got) == [0, 1, 2, 3]
        assert endpoint.created == 2 and sorted(endpoint.answered.values()) == [1] * 4


# -- a real `distill run`, killed while its batch is pending --------------------------------


def write_config(folder: Path, base_url: str, n: int, poll: float, temperature: float) -> Path:
    with open(folder / "seeds.jsonl", "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Tell me one fact about the number {i}."}) + "\n")
    config = {
        "output": "out",
        "seed": 0,
        "cache": {"path": "requests.sqlite"},  # this run's own: a shared one would answer from earlier tests
        "seeds": [{"path": "seeds.jsonl", "name": "numbers", "license": "CC0-1.0"}],
        "teachers": {
            "t": {
                "plugin": "openai",
                "options": {
                    "base_url": base_url,
                    "model": "distill-tiny",
                    "license": "Apache-2.0",
                    "max_tokens": 16,
                    "temperature": temperature,
                    "batch": True,
                    "batch_window": 0.5,
                    "batch_poll_seconds": poll,
                    "price_per_1k_prompt": 0.00015,
                    "price_per_1k_completion": 0.0006,
                },
            }
        },
        "stages": [
            {"kind": "generate", "name": "answers", "teacher": "t", "batch_size": 4, "task": {"plugin": "response"}}
        ],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DISTILL_PLUGINS": "openai,tasks", "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "distill.cli", "run", str(config), "--quiet"], stdout=out, stderr=out, env=env
        )


def wait(cond, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        time.sleep(0.05)


def kill_while_pending_then_resume(
    endpoint: BatchEndpoint, folder: Path, n: int, poll: float, timeout: float, temperature: float = 0.0
) -> str:
    """Kill `distill run` while its batch is held pending, resume it, release the batch; the
    resumed run's log."""
    config = write_config(folder, endpoint.base_url, n, poll, temperature)
    log = folder / "run.log"
    endpoint.hold()
    first = run_cli(config, log)
    try:
        wait(lambda: endpoint.created == 1, first, timeout, "batch created")
        time.sleep(4 * poll)  # it is polling the pending batch now
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    ledger = (folder / "out" / "state").rglob(Ledger.FILE)
    assert len(list(ledger)) == 1, "the batch id was not written down before the kill"

    second = run_cli(config, log)
    try:
        polled = endpoint.polls
        wait(lambda: endpoint.polls > polled, second, timeout, "the resumed run polling the batch")
        endpoint.release()
        assert second.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
    # Nothing paid twice: one upload, one batch, every request answered once, nothing live.
    assert (endpoint.uploads, endpoint.created, endpoint.live_calls) == (1, 1, 0), log.read_text()[-3000:]
    assert len(endpoint.answered) == n and set(endpoint.answered.values()) == {1}
    answers = list(distill.Run.open(folder / "out").records("answers"))
    assert len(answers) == n and len({r.id for r in answers}) == n
    assert all(r.messages[-1].role == "assistant" and r.messages[-1].content for r in answers)
    return log.read_text()


def test_killed_while_the_batch_is_pending_resumes_polling_without_paying_twice(tmp_path):
    with BatchEndpoint(stub_engine()) as endpoint:
        log = kill_while_pending_then_resume(endpoint, tmp_path, n=10, poll=0.2, timeout=120)
    assert "batch batch-2 submitted (10 requests)" in log and "batch batch-2 completed (10/10 answered)" in log


@pytest.mark.slow
def test_killed_while_vllm_runs_the_batch_resumes_without_paying_twice(tmp_path, tiny_model_dir):
    pytest.importorskip("vllm")
    with BatchEndpoint(vllm_engine(tiny_model_dir, "distill-tiny", tmp_path / "vllm.log")) as endpoint:
        # Sampled: the random tiny model's greedy answer is whitespace, which the task drops.
        kill_while_pending_then_resume(endpoint, tmp_path, n=12, poll=0.5, timeout=600, temperature=1.0)
        files = [f for f in endpoint.files if f not in {b["input_file_id"] for b in endpoint.batches.values()}]
        output = [json.loads(x) for f in files for x in endpoint.files[f].decode().splitlines()]
        assert all(x["response"]["body"]["model"] == "distill-tiny" for x in output)


def test_a_stages_cost_reaches_its_manifest_and_tensorboard(tmp_path):
    """The teacher's spend over a stage (batch prices here) is one of the stage's figures."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from distill.config.loader import parse_config
    from distill.pipeline import Pipeline
    from distill.registry import make_registry

    with BatchEndpoint(stub_engine()) as endpoint:
        config = yaml.safe_load(write_config(tmp_path, endpoint.base_url, n=6, poll=0.05, temperature=0.0).read_text())
        config["tracking"] = {"report_to": "tensorboard", "run_name": "priced"}
        Pipeline(parse_config(config, base_dir=tmp_path), make_registry(), progress=False, log=lambda m: None).run()
    manifest = json.loads((tmp_path / "out" / "stages" / "answers" / "manifest.json").read_text())
    calls = manifest["stats"]["calls"]
    budget = json.loads(next((tmp_path / "out" / "state").rglob("api-budget.json")).read_text())
    # 6 answers of 10 prompt + 5 completion tokens at half of $0.00015 / $0.0006 per 1k
    assert (
        calls["cost_usd"] == pytest.approx(budget["cost_usd"]) == pytest.approx(6 * (10 * 0.00015 + 5 * 0.0006) / 2000)
    )
    assert calls["prompt_tokens"] == 60
    acc = EventAccumulator(str(tmp_path / "out" / "tensorboard" / "priced" / "pipeline"))
    acc.Reload()
    assert acc.Scalars("answers/cost_usd")[0].value == pytest.approx(calls["cost_usd"], rel=1e-6)
