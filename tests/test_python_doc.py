"""docs/python.md runs: its ```python blocks, in order, in one namespace, as a notebook runs cells.

The blocks are read from the page, so editing the page re-tests it, and nothing in a block is
rewritten. What a reader has and a test cannot, the test supplies openly, the way the page
itself tells a reader to:

- the folder the reader works in: a temporary one holding `examples/` (the api_teacher example
  and the quickstart files it borrows, copied from this repository, outputs left out) and
  `my-project/seeds.jsonl`, the seed file the page's dict config names;
- the API: `OPENAI_BASE_URL` points at `tests/servers.StubUpstream`, an OpenAI-compatible server
  on 127.0.0.1 that counts the requests it answers: the "server of your own" the page and the
  example read that variable for. `TEACHER_LICENSE` declares its terms, as the example's header
  says to; `OPENAI_API_KEY` is a dummy (the stub checks none);
- the shared request cache: `DISTILL_CACHE_DIR` moves it into the temporary folder, so a
  previous test run's answers cannot make this one pass.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from servers import StubUpstream

import distill

pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "python.md"
FENCE = re.compile(r"^```([^\s`]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
#: Languages of the page's other fences: none is Python under another name.
NOT_PYTHON = {"", "bash", "console", "json", "text", "toml", "yaml"}
SEED_QUESTIONS = ["How do I reset my Acme router?", "Why is my Wi-Fi slow upstairs?", "What is WPA3?"]


class Block(NamedTuple):
    line: int  # the page's line number of the block's first line of code
    code: str


def fences(page: str) -> list[tuple[str, Block]]:
    """Every fenced block on the page with its language."""
    return [(m.group(1), Block(page.count("\n", 0, m.start(2)) + 1, m.group(2))) for m in FENCE.finditer(page)]


def python_blocks(page: str) -> list[Block]:
    return [block for lang, block in fences(page) if lang == "python"]


def run_block(block: Block, namespace: dict[str, Any], path: Path = PAGE) -> None:
    """Run one block as if it stood at its line of `path`: a traceback names the page's line."""
    exec(compile("\n" * (block.line - 1) + block.code, str(path), "exec"), namespace)


def notebook() -> dict[str, Any]:
    """A fresh namespace, as a new kernel has: a class defined in a cell belongs to `__main__`."""
    return {"__name__": "__main__"}


@pytest.fixture
def stub() -> Iterator[StubUpstream]:
    with StubUpstream(latency=0.0) as server:
        yield server


@pytest.fixture
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: StubUpstream) -> Path:
    """The reader's working folder and environment (see the module's docstring)."""
    ignore = shutil.ignore_patterns("out", "__pycache__")
    for name in ("quickstart", "api_teacher"):
        shutil.copytree(ROOT / "examples" / name, tmp_path / "examples" / name, ignore=ignore)
    (tmp_path / "my-project").mkdir()
    (tmp_path / "my-project" / "seeds.jsonl").write_text(
        "".join(json.dumps({"question": q}) + "\n" for q in SEED_QUESTIONS)
    )
    for name in ("OPENAI_MODEL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docs-test-not-a-key")
    monkeypatch.setenv("TEACHER_LICENSE", "Apache-2.0")
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_code_block_that_is_python_is_run():
    """A block fenced ```py or ```python3 would be skipped silently: the page uses one spelling."""
    langs = {lang for lang, _ in fences(PAGE.read_text())}
    assert "python" in langs
    assert langs - {"python"} <= NOT_PYTHON, f"fences this test does not run: {sorted(langs - {'python'} - NOT_PYTHON)}"
    assert len(python_blocks(PAGE.read_text())) == PAGE.read_text().count("```python")


def test_a_failing_block_fails_at_its_line_of_the_page():
    page = "Text.\n\n```python\nx = 1\nraise ValueError('broken example')\n```\n"
    (block,) = python_blocks(page)
    assert block == Block(4, "x = 1\nraise ValueError('broken example')\n")
    with pytest.raises(ValueError, match="broken example") as failure:
        run_block(block, notebook(), Path("docs/page.md"))
    assert failure.traceback[-1].lineno + 1 == 5  # pytest counts from 0
    assert str(failure.traceback[-1].path) == "docs/page.md"


def test_the_page_runs_and_running_it_again_asks_the_server_nothing(reader: Path, stub: StubUpstream):
    blocks = python_blocks(PAGE.read_text())
    ns = notebook()
    asked: list[int] = []  # the stub's count of answered requests after each block
    for block in blocks:
        run_block(block, ns)
        asked.append(stub.answered)
    assert asked[0] > 0, "the example run asks the teacher"

    # The example, run from its real YAML file up to the student: data, audit and report.
    example = distill.Run.open(reader / "examples" / "api_teacher" / "out")
    assert "student" not in example.stage_names() and example.stage_names()[-1] == "prefs"
    assert ns["sft"].num_rows == example.counts()["clean"]["kept"] == ns["kept"].num_rows > 0
    prov = json.loads(ns["kept"][0]["provenance"])
    assert prov["sources"][0]["dataset"] == "acme-support-seeds" and prov["sources"][0]["license"] == "CC0-1.0"
    assert [r.target for r in ns["reports"]] and all(r.verdict for r in ns["reports"])
    assert (reader / "examples" / "api_teacher" / "out" / "report.html").is_file()

    # The dict config, then the same config with a filter written in a cell: its answers reused.
    plugged = next(i for i, b in enumerate(blocks) if "plugins=[" in b.code)
    assert asked[plugged] == asked[plugged - 1] > asked[plugged - 2], "the filter's run asked nothing new"
    run = ns["run"]
    assert run.output.resolve() == reader / "my-project" / "out"
    assert run.stage_names() == ["seeds", "answers", "polite", "sft"]
    counts = run.counts()
    assert counts["answers"]["in"] == len(SEED_QUESTIONS) == counts["polite"]["in"] == counts["sft"]["kept"]
    for record in run.records("polite"):
        assert record.response().startswith("stub answer")  # the stub wrote it
        assert [g.model for g in record.provenance.generators] == ["gpt-4o-mini"]
        assert [e.stage for e in record.provenance.events][-1] == "polite"

    # distill.generate: rows in, answers with provenance out.
    answers = ns["answers"]
    assert answers.num_rows == 2
    for row, line in zip(answers, (1, 2), strict=True):
        assert row["messages"][-1]["role"] == "assistant"
        assert row["messages"][-1]["content"].startswith("stub answer")
        prov = json.loads(row["provenance"])
        assert prov["sources"] == [{"dataset": "input", "row": line, "license": "CC0-1.0"}]
        assert [g["model"] for g in prov["generators"]] == ["gpt-4o-mini"]
        # The rows' terms and the teacher's: a server of one's own declares none, so they are unknown.
        assert (
            row["license"] == f"CC0-1.0 AND {prov['generators'][0]['license']}" == "CC0-1.0 AND LicenseRef-Unspecified"
        )
    assert asked[-1] == asked[-2] + 2

    # The notebook run again from the top, in a new kernel: everything is resumed or cached.
    again = notebook()
    for block in blocks:
        run_block(block, again)
    assert stub.answered == asked[-1], "a second run of the page asked the server again"
    assert again["answers"]["messages"] == answers["messages"] and again["answers"]["id"] == answers["id"]
    assert again["sft"]["messages"] == ns["sft"]["messages"]
    # Only the export is redone: the page's two configs feed it from different stages.
    assert {s.stage: s.skipped for s in again["run"].stages} == {
        "seeds": True,
        "answers": True,
        "polite": True,
        "sft": False,
    }
