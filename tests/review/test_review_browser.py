"""The review page in a real browser: headless Chromium driven by Playwright, real clicks and keys,
against a real `distill review` process that is killed mid-review and started again.

Checks: markup in a record is shown as text (no script runs, no element is made); every
decision made before the kill is in the decisions file exactly once, including one made while
the server was down (kept by the page and sent when it came back); reopening the page lands on
the first record without a decision; the review stage's preference export matches the clicks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from review_run import ranked_config, with_review
from servers import free_port
from util import chromium, pipeline

from distill.api import Run
from distill.review.decisions import DecisionLog, decisions_path

pytestmark = pytest.mark.slow  # starts a browser and a server process

EVIL = 'How do <b>I</b> fix <script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2"> this?'
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def start_server(out: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "distill.cli", "review", str(out), "--stage", "ranked", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--reviewer", "ann"], stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"distill review exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise AssertionError("distill review did not start listening")


@pytest.fixture
def run_to_review(tmp_path):
    pytest.importorskip("playwright", reason="pip install playwright (the dev extra) to drive the browser")
    if chromium() is None:
        pytest.skip("no chromium-headless-shell or chromium on PATH (scripts/install.sh installs it, as root)")
    cfg = ranked_config(tmp_path)
    seeds = Path(cfg["seeds"][0]["path"])
    seeds.write_text(json.dumps({"prompt": EVIL}) + "\n" + seeds.read_text())
    pipeline(cfg).run()
    return cfg, tmp_path / "out"


def test_reviewing_in_chromium_survives_a_killed_server(run_to_review, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    cfg, out = run_to_review
    records = list(Run.open(out).records("ranked"))
    port, log = free_port(), tmp_path / "review.log"
    url = f"http://127.0.0.1:{port}/"
    server = start_server(out, port, log)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            def wait_record(rid: str) -> None:
                expect(page.locator("#record-id")).to_have_text(rid)  # polls the DOM: no eval under the CSP

            def wait_saved(count: int) -> None:
                deadline = time.monotonic() + 20
                while len(DecisionLog(decisions_path(out, "ranked")).decisions) < count:
                    assert time.monotonic() < deadline, page.text_content("#status")
                    time.sleep(0.05)

            page.goto(url)
            wait_record(records[0].id)  # nothing reviewed yet: the first record

            # The record whose prompt is markup: shown as text, nothing runs, nothing is made.
            evil = next(r for r in records if "<script>" in r.prompt()[-1].content)
            page.goto(f"{url}#{evil.id}")
            wait_record(evil.id)
            assert EVIL in page.text_content("#prompt")
            assert page.locator("#prompt script, #prompt img, #prompt b, #candidates img").count() == 0
            assert page.evaluate("window.__pwned") is None and not dialogs

            a, b, c, d, e = [r for r in records if r.id != evil.id][:5]
            page.goto(f"{url}#{a.id}")
            wait_record(a.id)
            page.keyboard.press("2")  # candidate 2 is the best
            wait_saved(1)
            page.keyboard.press("a")  # accept; the page moves on
            wait_saved(2)
            expect(page.locator("#record-id")).not_to_have_text(a.id)

            page.goto(f"{url}#{b.id}")
            wait_record(b.id)
            for key in ("Shift+Digit2", "Shift+Digit3", "Shift+Digit1"):  # rank: 2 > 3 > 1
                page.keyboard.press(key)
            wait_saved(3)

            page.goto(f"{url}#{c.id}")
            wait_record(c.id)
            page.click("#reject")  # no reason yet: asks for one, sends nothing
            assert "reason" in (page.text_content("#status") or "")
            page.fill("#reason", "answers a different question")
            page.keyboard.press("Enter")
            wait_saved(4)
            expect(page.locator("#record-id")).not_to_have_text(c.id)  # a verdict moves on by itself
            page.goto(f"{url}#{d.id}")
            wait_record(d.id)

            server.send_signal(signal.SIGKILL)  # mid-review
            server.wait(10)

            # The page is still open; a decision made now waits in the page until the server is back.
            page.keyboard.press("e")  # edit candidate 1 (none chosen yet)
            page.fill("#editor-text", "Restart the router, then wait a minute.")
            page.keyboard.press("Control+Enter")
            expect(page.locator("#status")).to_contain_text("not saved yet")
            assert len(DecisionLog(decisions_path(out, "ranked")).decisions) == 4

            server = start_server(out, port, log)
            page.goto(url)  # reopened: sends what was waiting, then resumes at the first undecided record
            wait_saved(5)
            first_open = next(r for r in records if r.id not in {a.id, b.id, c.id, d.id})
            wait_record(first_open.id)
            page.goto(f"{url}#{e.id}")
            wait_record(e.id)
            page.click("#candidates .candidate[data-index='0'] button.choose")
            wait_saved(6)
            page.keyboard.press("f")
            wait_saved(7)
            expect(page.locator("#mine")).to_contain_text("flagged")
            shot = Path(os.environ.get("DISTILL_REVIEW_SCREENSHOT") or tmp_path / "review.png")
            page.goto(f"{url}#{b.id}")
            wait_record(b.id)
            page.screenshot(path=str(shot), full_page=True)
            assert not errors and not dialogs
            browser.close()
    finally:
        server.kill()
        server.wait(10)

    made = DecisionLog(decisions_path(out, "ranked")).decisions
    assert Counter((x.record, x.action) for x in made) == Counter(
        {
            (a.id, "choose"): 1,
            (a.id, "accept"): 1,
            (b.id, "rank"): 1,
            (c.id, "reject"): 1,
            (d.id, "edit"): 1,
            (e.id, "choose"): 1,
            (e.id, "flag"): 1,
        }
    )
    assert len({x.id for x in made}) == len(made) == 7
    by = {(x.record, x.action): x for x in made}
    assert by[(b.id, "rank")].ranking == [1, 2, 0] and by[(a.id, "choose")].candidate == 1
    assert by[(c.id, "reject")].reason == "answers a different question"
    assert by[(d.id, "edit")].text == "Restart the router, then wait a minute." and by[(d.id, "edit")].candidate == 0

    pipeline(with_review(cfg)).run()
    prefs = list(Run.open(out).dataset("prefs"))
    pairs = {
        row["prompt"][-1]["content"]: (row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in prefs
    }
    ask = lambda r: r.prompt()[-1].content  # noqa: E731
    assert pairs[ask(a)] == (a.candidates[1].content, a.candidates[2].content)
    assert pairs[ask(b)] == (b.candidates[1].content, b.candidates[0].content)
    assert ask(c) not in pairs
    assert pairs[ask(e)][0] == e.candidates[0].content
