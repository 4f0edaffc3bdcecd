"""The run log's events in one process: what a stage's start, progress and end carry, how they
read as text and as JSON, and the third-party bar switches (the CLI tests run them for real)."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import pytest

from distill.io.runlog import BAR_SWITCHES, LinePrinter, RunEvent, RunLog, library_bars_hidden, to_json, to_text


def test_a_stage_has_a_start_steady_progress_and_an_end_with_its_figures():
    events: list[RunEvent] = []
    log = RunLog([events.append], interval=0.05)
    with log.stage("answers", "generate") as live:
        assert log.live is live
        live.phase("starting teacher 'writer'")
        time.sleep(0.25)
        live.phase(None)
        live.count(40)
        for _ in range(4):
            live.advance(5)
            live.report({"requests": 5 * (_ + 1), "cache_hits": 1})
            time.sleep(0.06)
        live.finish("done", kept=19, rejected=1, reasons={"length: too short": 1})
    assert log.live is not live  # reports after the stage go nowhere
    kinds = [e.event for e in events]
    assert kinds[0] == "stage_start" and kinds[-1] == "stage_end" and kinds.count("progress") >= 3
    progress = [e.figures for e in events if e.event == "progress"]
    assert any(p.get("phase") == "starting teacher 'writer'" and "done" not in p for p in progress)
    counted = [p for p in progress if "done" in p]
    assert counted and counted[-1]["total"] == 40 and counted[-1]["done"] in (5, 10, 15, 20)
    assert counted[-1].get("requests", 5) % 5 == 0 and counted[-1]["rate"] > 0
    assert [p["elapsed"] for p in progress] == sorted(p["elapsed"] for p in progress)
    end = events[-1]
    assert (end.stage, end.kind, end.figures["status"]) == ("answers", "generate", "done")
    assert end.figures["kept"] == 19 and end.figures["seconds"] >= 0.3


def test_a_failed_or_interrupted_stage_still_ends_and_its_error_is_raised():
    events: list[RunEvent] = []
    log = RunLog([events.append])
    with pytest.raises(ValueError, match="boom"), log.stage("clean", "filter"):
        raise ValueError("boom\nsecond line")
    assert events[-1].figures["status"] == "failed" and events[-1].figures["error"] == "ValueError: boom"
    with pytest.raises(KeyboardInterrupt), log.stage("clean", "filter"):
        raise KeyboardInterrupt
    assert events[-1].figures["status"] == "interrupted"
    assert "progress" not in {e.event for e in events}  # no interval: no progress events


def test_events_read_as_text_lines():
    at = time.mktime((2026, 5, 1, 12, 0, 1, 0, 0, -1))
    start = RunEvent("stage_start", "answers", "generate", time=at)
    assert to_text(start) == "12:00:01 stage 'answers' (generate) started"
    progress = {"done": 120, "total": 400, "unit": "records", "rate": 4.04, "requests": 130, "cache_hits": 10}
    line = to_text(RunEvent("progress", "answers", "generate", {**progress, "elapsed": 31.2}, time=at))
    assert line == (
        "12:00:01 stage 'answers': 120/400 records (30%), 4.0 records/s, 130 teacher requests, 10 cache hits, 31s elapsed"
    )
    training = {"train_step": "sft", "step": 12, "max_steps": 50, "loss": 2.31456, "elapsed": 60}
    assert to_text(RunEvent("progress", "student", "train", training, time=at)).endswith(
        "stage 'student': sft step 12/50, loss 2.315, 60s elapsed"
    )
    reasons = {"a": 1, "b": 5, "c": 3, "d": 2}
    end = {
        "status": "done",
        "seconds": 99.24,
        "in": 400,
        "generated": 0,
        "kept": 389,
        "rejected": 11,
        "reasons": reasons,
    }
    assert to_text(RunEvent("stage_end", "clean", "filter", end, time=at)) == (
        "12:00:01 stage 'clean' done in 99.2s: in 400, generated 0, kept 389, rejected 11 (b: 5, c: 3, d: 2, ...)"
    )
    assert (
        to_text(RunEvent("message", figures={"text": "stage 'x': resuming"}, time=at)) == "12:00:01 stage 'x': resuming"
    )


def test_json_lines_are_flat_objects_and_secrets_are_scrubbed_before_escaping(monkeypatch):
    secret = 'abc"def\\ghi-123'
    monkeypatch.setenv("RUNLOG_UNIT_API_KEY", secret)
    figures = {"status": "done", "kept": 1, "rejected": 1, "reasons": {f"key {secret}": 1}}
    event = RunEvent("stage_end", "clean", "filter", figures)
    line = to_json(event)
    data = json.loads(line)
    assert data["event"] == "stage_end" and data["stage"] == "clean" and data["kind"] == "filter"
    assert data["reasons"] == {"key $RUNLOG_UNIT_API_KEY": 1}
    assert "abc" not in line
    assert "abc" not in to_text(event) and "(key $RUNLOG_UNIT_API_KEY: 1)" in to_text(event)


def test_the_printer_writes_whole_lines_from_several_threads():
    stream = io.StringIO()
    printer = LinePrinter(stream, "json")

    def say(k: int) -> None:
        for i in range(200):
            printer.message(f"thread {k} line {i}")

    threads = [threading.Thread(target=say, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 800 and all(json.loads(x)["event"] == "message" for x in lines)
    with pytest.raises(ValueError, match="known: text, json"):
        LinePrinter(stream, "yaml")


def test_library_bars_are_switched_off_for_the_run_and_back_after(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "0")
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    with library_bars_hidden():
        assert all(os.environ[k] == v for k, v in BAR_SWITCHES.items())
    assert os.environ["TQDM_DISABLE"] == "0" and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
