"""The request cache on real SQLite files: keys, durability, concurrency, corruption, explain."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from distill.cache.store import (
    RequestCache,
    cache_key,
    default_cache_path,
    key_parts,
)
from distill.cli.cache import cache_app
from distill.errors import PluginError, StoreError
from distill.teacher import ChatRequest, Sample

IDENTITY = {"plugin": "openai", "model": "acme/chat-1", "revision": "r1", "file_hash": None}
SAMPLING = {"n": 1, "temperature": 0.7, "top_p": 0.95, "max_tokens": 256}


def request(question: str = "What is 2+2?", seed: int | None = 7, system: str = "Be brief.") -> ChatRequest:
    return ChatRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}], seed=seed
    )


def parts(identity: dict | None = None, sampling: dict | None = None, req: ChatRequest | None = None) -> dict:
    return key_parts(identity or IDENTITY, sampling or SAMPLING, req or request())


def samples(text: str = "4") -> list[Sample]:
    return [Sample(text=text, finish_reason="stop", completion_tokens=3, prompt_tokens=11, logprobs=[-0.25, -1.5, 0.0])]


def put(cache: RequestCache, p: dict, text: str = "4") -> str:
    key = cache_key(p)
    cache.put(key, p, samples(text))
    return key


# --- keys ---------------------------------------------------------------------------------------


def test_key_parts_are_canonical_and_hold_only_identity_sampling_request():
    p = key_parts({**IDENTITY, "license": "MIT", "plugin_version": "1.2"}, SAMPLING, request())
    assert list(p) == ["request", "sampling", "teacher"]
    assert p["teacher"] == IDENTITY
    assert p["request"] == {
        "messages": [{"content": "Be brief.", "role": "system"}, {"content": "What is 2+2?", "role": "user"}],
        "n": None,
        "response_format": None,
        "seed": 7,
    }
    # The key does not depend on dict order.
    reordered = key_parts(dict(reversed(list(IDENTITY.items()))), dict(reversed(list(SAMPLING.items()))), request())
    assert cache_key(reordered) == cache_key(p)
    assert len(cache_key(p)) == 64


@pytest.mark.parametrize("field", ["api_key", "OPENAI_API_KEY", "authorization", "access_token", "secret"])
def test_secrets_are_refused_in_key_parts(field):
    with pytest.raises(PluginError, match=f"'openai'.*sampling.extra.{field}.*secret"):
        key_parts(IDENTITY, {**SAMPLING, "extra": {field: "sk-123"}}, request())


def test_a_response_format_may_name_a_password_field():
    schema = {"type": "json_schema", "json_schema": {"properties": {"password": {"type": "string"}}}}
    req = ChatRequest(messages=[{"role": "user", "content": "make a form"}], response_format=schema)
    assert key_parts(IDENTITY, SAMPLING, req)["request"]["response_format"] == schema


def test_default_cache_path_follows_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_path() == tmp_path / "c" / "requests.sqlite"
    monkeypatch.delenv("DISTILL_CACHE_DIR")
    assert default_cache_path() == Path.home() / ".cache" / "distill" / "requests.sqlite"


# --- put / get ----------------------------------------------------------------------------------


def test_round_trip_keeps_every_sample_field_across_reopen(tmp_path):
    path = tmp_path / "deep" / "dir" / "requests.sqlite"
    with RequestCache(path) as cache:
        key = put(cache, parts())
        assert cache.get(key) == samples()
        cache.put(key, parts(), samples("other"))  # insert-or-ignore: the first answer stays
    with RequestCache(path) as cache:
        assert cache.get(key) == samples()
        assert cache.get("0" * 64) is None
        assert cache.get_many([key, "0" * 64, key]) == [samples(), None, samples()]
        assert cache.get_many([]) == []


@pytest.mark.parametrize(
    "changed",
    [
        {"req": request(seed=8)},
        {"sampling": {**SAMPLING, "max_tokens": 512}},
        {"req": request(question="What is 3+3?")},
        {"identity": {**IDENTITY, "revision": "r2"}},
    ],
)
def test_any_change_misses(tmp_path, changed):
    with RequestCache(tmp_path / "c.sqlite") as cache:
        put(cache, parts())
        assert cache.get(cache_key(parts(**changed))) is None
        assert cache.get(cache_key(parts())) == samples()


def test_stats_counts(tmp_path):
    with RequestCache(tmp_path / "c.sqlite") as cache:
        keys = [put(cache, parts(req=request(question=f"q{i}"))) for i in range(3)]
        put(cache, parts(identity={**IDENTITY, "model": "acme/chat-2"}))
        cache.get(keys[0])
        cache.get_many(keys[:2] + ["0" * 64])
        for i in range(3):
            miss = parts(req=request(question=f"new {i}"))
            cache.record_miss(cache_key(miss), miss)
        cache.record_miss(cache_key(miss), miss)  # the same miss twice is one row
        s = cache.stats()
    assert (s.entries, s.hits, s.misses) == (4, 3, 3)
    assert s.models == {"acme/chat-1": 3, "acme/chat-2": 1}
    assert s.size_bytes > 0 and s.path == str(tmp_path / "c.sqlite")


def test_misses_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr("distill.cache.store.MAX_MISSES", 5)
    with RequestCache(tmp_path / "c.sqlite") as cache:
        for i in range(12):
            p = parts(req=request(question=f"q{i}"))
            cache.record_miss(cache_key(p), p)
        assert cache.stats().misses == 5
        assert [e.key for e in cache.explain(limit=50)] == [
            cache_key(parts(req=request(question=f"q{i}"))) for i in range(11, 6, -1)
        ]


# --- concurrency --------------------------------------------------------------------------------


def _writer(path: str, worker: int, count: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait(30)
    with RequestCache(Path(path)) as cache:
        for i in range(count):
            p = parts(req=request(question=f"worker {worker} question {i}"))
            cache.record_miss(cache_key(p), p)
            cache.put(cache_key(p), p, samples(f"{worker}-{i}"))
            shared = parts(req=request(question=f"shared {i}"))  # both write these keys
            cache.put(cache_key(shared), shared, samples("shared"))
            cache.get(cache_key(shared))


def test_two_processes_write_at_once_without_losing_entries(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    path, count = tmp_path / "shared.sqlite", 60
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), w, count, start)) for w in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]  # a "database is locked" error would exit 1
    with RequestCache(path) as cache:
        s = cache.stats()
        assert s.entries == 2 * count + count
        for w in range(2):
            keys = [cache_key(parts(req=request(question=f"worker {w} question {i}"))) for i in range(count)]
            assert [r[0].text for r in cache.get_many(keys)] == [f"{w}-{i}" for i in range(count)]
    assert s.hits == 2 * count
    assert s.misses == 2 * count


# --- corruption ---------------------------------------------------------------------------------


def test_garbage_file_is_reported_not_rebuilt(tmp_path):
    path = tmp_path / "requests.sqlite"
    garbage = b"this is not a database " * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match="corrupted") as info:
        RequestCache(path)
    assert str(path) in str(info.value) and "move it aside" in str(info.value)
    assert path.read_bytes() == garbage


def _real_cache(path: Path, n: int = 300) -> None:
    with RequestCache(path) as cache:
        for i in range(n):
            put(cache, parts(req=request(question=f"question {i} " + "x" * 200)))


@pytest.mark.parametrize("keep", [0.5, 0.9, 200])
def test_truncated_cache_is_reported(tmp_path, keep):
    path = tmp_path / "requests.sqlite"
    _real_cache(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep) if keep < 1 else keep)
    with pytest.raises(StoreError, match="corrupted.*move it aside"):
        RequestCache(path)


def test_unparseable_rows_are_reported_not_treated_as_misses(tmp_path):
    path = tmp_path / "requests.sqlite"
    with RequestCache(path) as cache:
        bad, good = put(cache, parts()), put(cache, parts(req=request(seed=9)))
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET samples = ? WHERE key = ?", ('[{"txt": 1}]', bad))
    db.commit()
    db.close()
    with RequestCache(path) as cache:
        assert cache.get(good) == samples()
        with pytest.raises(StoreError, match=f"{bad[:12]}.*no longer parse"):
            cache.get(bad)
        with pytest.raises(StoreError, match="no longer parse"):
            cache.get_many([good, bad])
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET samples = 'not json', parts = '{broken' WHERE key = ?", (bad,))
    db.commit()
    db.close()
    with RequestCache(path) as cache:
        with pytest.raises(StoreError, match="no longer parse"):
            cache.get(bad)
        with pytest.raises(StoreError, match="parts of entry"):
            cache.explain_key(parts(req=request(seed=10)))


def test_another_sqlite_database_is_not_taken_for_a_cache(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE entries (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a distill request cache"):
        RequestCache(path)


# --- explain ------------------------------------------------------------------------------------


def _miss(cache: RequestCache, p: dict) -> str:
    """What the core does: look up, record the miss, call the teacher, store the answer."""
    key = cache_key(p)
    assert cache.get(key) is None
    cache.record_miss(key, p)
    cache.put(key, p, samples("fresh"))
    return key


def test_explain_names_exactly_the_changed_path(tmp_path):
    with RequestCache(tmp_path / "c.sqlite") as cache:
        for i in range(5):
            put(cache, parts(req=request(question=f"q{i}")))
        # A second run with a bigger max_tokens: every request misses, and each result is
        # stored; each miss must still be explained by the old entry, not by its neighbours.
        for i in range(5):
            _miss(cache, parts(sampling={**SAMPLING, "max_tokens": 512}, req=request(question=f"q{i}")))
        explained = cache.explain(limit=10)
    assert len(explained) == 5
    for e in explained:
        assert [(d.path, d.change, d.cached, d.new) for d in e.differences] == [
            ("sampling.max_tokens", "changed", 256, 512)
        ]
        assert e.note is None and e.nearest_model == "acme/chat-1" and e.time is not None


@pytest.mark.parametrize(
    "changed, path, cached, new",
    [
        ({"req": request(seed=8)}, "request.seed", 7, 8),
        ({"identity": {**IDENTITY, "revision": "r2"}}, "teacher.revision", "r1", "r2"),
        ({"req": request(system="Be thorough.")}, "request.messages[0].content", "Be brief.", "Be thorough."),
        ({"sampling": {**SAMPLING, "max_tokens": 256.0}}, "sampling.max_tokens", 256, 256.0),
    ],
)
def test_explain_key(tmp_path, changed, path, cached, new):
    with RequestCache(tmp_path / "c.sqlite") as cache:
        put(cache, parts())
        put(cache, parts(req=request(question="Something else entirely?")))
        e = cache.explain_key(parts(**changed))
        assert [(d.path, d.cached, d.new) for d in e.differences] == [(path, cached, new)]
        assert type(e.differences[0].new) is type(new)
        hit = cache.explain_key(parts())
        assert hit.differences == [] and "hits" in (hit.note or "")


def test_explain_added_and_removed_fields_and_long_strings(tmp_path):
    long_a = "Context: " + "lorem ipsum " * 40 + "the answer is A."
    long_b = "Context: " + "lorem ipsum " * 40 + "the answer is B."
    with RequestCache(tmp_path / "c.sqlite") as cache:
        put(cache, parts(req=request(question=long_a)))
        e = cache.explain_key(parts(sampling={**SAMPLING, "stop": ["\n"]}, req=request(question=long_a)))
        assert [(d.path, d.change, d.cached, d.new) for d in e.differences] == [
            ("sampling.stop[0]", "added", None, "\n")
        ]
        e = cache.explain_key(parts(sampling={"n": 1}, req=request(question=long_b)))
        by_path = {d.path: d for d in e.differences}
        assert by_path["sampling.max_tokens"].change == "removed"
        d = by_path["request.messages[1].content"]
        # Clipped around the first difference, so the difference is visible.
        assert len(d.cached) <= 82 and len(d.new) <= 82
        assert d.cached.endswith("is A.") and d.new.endswith("is B.") and d.cached.startswith("…")


def test_explain_says_when_the_model_has_no_entry(tmp_path):
    with RequestCache(tmp_path / "c.sqlite") as cache:
        empty = cache.explain_key(parts())
        assert "no entry for model 'acme/chat-1'" in (empty.note or "") and "nor for any" in empty.note
        put(cache, parts())
        _miss(cache, parts(identity={**IDENTITY, "model": "acme/chat-2"}))
        [e] = cache.explain()
    assert "no entry for model 'acme/chat-2'" in (e.note or "")
    assert [(d.path, d.cached, d.new) for d in e.differences] == [("teacher.model", "acme/chat-1", "acme/chat-2")]


# --- CLI ----------------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str, str]:
    app = typer.Typer()
    app.add_typer(cache_app, name="cache")
    r = CliRunner().invoke(app, ["cache", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def test_cli_stats_and_explain(tmp_path):
    path = tmp_path / "c.sqlite"
    with RequestCache(path) as cache:
        key = put(cache, parts())
        cache.get(key)
        _miss(cache, parts(sampling={**SAMPLING, "max_tokens": 512}))
    code, stdout, _ = _cli("stats", "--cache", str(path))
    assert code == 0 and "entries" in stdout and "acme/chat-1" in stdout
    code, stdout, _ = _cli("stats", "--cache", str(path), "--json")
    data = json.loads(stdout)
    assert (data["entries"], data["hits"], data["misses"], data["models"]) == (2, 1, 1, {"acme/chat-1": 2})
    code, stdout, _ = _cli("explain", "--cache", str(path))
    assert code == 0 and "sampling.max_tokens" in stdout and "256" in stdout and "512" in stdout
    code, stdout, _ = _cli("explain", "--cache", str(path), "--json", "--limit", "5")
    [e] = json.loads(stdout)
    assert e["differences"] == [{"path": "sampling.max_tokens", "change": "changed", "cached": 256, "new": 512}]


def test_cli_default_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    RequestCache(tmp_path / "requests.sqlite").close()
    code, stdout, _ = _cli("explain")
    assert code == 0 and "no misses recorded" in stdout


def test_cli_missing_and_corrupted_cache(tmp_path):
    missing = tmp_path / "nope.sqlite"
    code, _, stderr = _cli("stats", "--cache", str(missing))
    assert code == 1 and "no request cache at" in stderr and "Traceback" not in stderr
    assert not missing.exists()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"\x00garbage" * 500)
    for command in ("stats", "explain"):
        code, _, stderr = _cli(command, "--cache", str(bad))
        assert code == 1 and "corrupted" in stderr and "Traceback" not in stderr
