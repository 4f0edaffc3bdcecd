"""The request cache: every teacher call is made once and never paid for twice.

Entries are addressed by the sha256 of a canonical description of the call (teacher identity,
sampling parameters, request), so any process and any run that makes the same call finds it.
The cache is one SQLite file in WAL mode, because several runs may share it and write at once.

It holds results somebody paid for, so it is never rebuilt silently: a file that is not a
SQLite database, fails `PRAGMA quick_check`, or holds a row that no longer parses is reported
as a `StoreError` naming the file, and the user decides what to do with it.

Misses are recorded too, so `distill cache explain` can say which field differs from the
nearest cached entry: a changed `max_tokens` otherwise costs a whole cache, and nobody knows why.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, TypeAdapter, ValidationError

from distill.cache.diff import ABSENT, MissExplanation, diff_paths, field_diff, flatten
from distill.errors import PluginError, StoreError
from distill.layout import CACHE_FILE
from distill.models.embedded import default_cache_dir
from distill.secrets import secret_paths
from distill.teacher import ChatRequest, Sample

#: `PRAGMA user_version` of a distill request cache; another value is another file format.
FORMAT = 1
MAX_MISSES = 1000
#: Most candidate rows `explain` compares a miss with: the recent ones are the likely cause.
SCAN_LIMIT = 5000
BUSY_TIMEOUT_MS = 60_000
IDENTITY_FIELDS = ("plugin", "model", "revision", "file_hash")

_SAMPLES = TypeAdapter(list[Sample])
_PARTS = TypeAdapter(dict[str, Any])
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, model TEXT, prompt TEXT, parts TEXT NOT NULL, samples TEXT NOT NULL,
    created REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0, last_hit REAL);
CREATE INDEX IF NOT EXISTS entries_model_created ON entries (model, created);
CREATE INDEX IF NOT EXISTS entries_created ON entries (created);
CREATE INDEX IF NOT EXISTS entries_prompt ON entries (prompt);
CREATE TABLE IF NOT EXISTS misses (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, model TEXT, parts TEXT NOT NULL,
    time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS misses_key ON misses (key);
"""


def default_cache_path() -> Path:
    return default_cache_dir() / CACHE_FILE


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def key_parts(identity: dict[str, Any], sampling: dict[str, Any], request: ChatRequest) -> dict[str, Any]:
    """The canonical description of one teacher call; its hash is the cache key.

    Only what changes the answer goes in: the teacher's identity (plugin, model, revision,
    file_hash), its sampling parameters and the request. The parts are stored in the cache
    file in clear text, so callers must never add secrets (API keys, tokens, auth headers) or
    anything that does not change the answer (endpoint URLs, timeouts): a key that looks like
    a secret is refused with a PluginError, a bug in the teacher plugin that must not be hidden.
    """
    parts = {
        "teacher": {f: identity.get(f) for f in IDENTITY_FIELDS},
        "sampling": sampling,
        "request": {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "n": request.n,
            "seed": request.seed,
            "response_format": request.response_format,
        },
    }
    if request.continue_final:  # only when set: keys made before the flag existed stay valid
        parts["request"]["continue_final"] = True
    secret = secret_paths(sampling, f"teacher plugin {identity.get('plugin')!r}: sampling")
    if secret:
        raise PluginError(
            f"{secret[0]} looks like a secret; it must never go into a cache key "
            f"(a teacher's sampling() is stored in clear text)"
        )
    # A JSON round trip with sorted keys: tuples become lists, and the dict compares and
    # prints exactly like what is stored.
    return json.loads(_canonical(parts))


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(parts).encode("utf-8")).hexdigest()


class CacheStats(BaseModel):
    path: str
    entries: int
    size_bytes: int
    #: Lifetime hits over every entry: calls that were not paid for again.
    hits: int
    #: Misses kept for `explain` (the most recent MAX_MISSES).
    misses: int
    models: dict[str, int]


class _Candidate(NamedTuple):
    key: str
    model: str | None
    created: float
    flat: dict[str, Any]


class RequestCache:
    """One cache file, shared by every teacher, run and process that opens it.

    Every write is its own committed, fsync'd transaction: the caller stores each result as
    it arrives and relies on it surviving a crash before the next request is sent. One object
    may be used from several threads; open a new one in each process (never across fork).
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        if not create and not self.path.is_file():
            raise StoreError(f"no request cache at {self.path}")
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the request cache {self.path}: {exc}") from exc
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _corrupt(self, detail: str) -> StoreError:
        return StoreError(
            f"the request cache {self.path} is corrupted ({detail}). It holds paid-for results, so "
            f"distill will not rebuild it: move it aside (with any {self.path.name}-wal and "
            f"{self.path.name}-shm files beside it) and run again to start a new cache"
        )

    def _open(self) -> None:
        db = self._db
        with self._errors():
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            rows = [r[0] for r in db.execute("PRAGMA quick_check")]
            if rows != ["ok"]:
                raise self._corrupt("; ".join(map(str, rows[:3])))
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            self._durable = True
        with self._write():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version != FORMAT and (version or tables):
                raise StoreError(
                    f"{self.path} is not a distill request cache of format {FORMAT} "
                    f"(user_version {version}); use another cache file or move it aside"
                )
            if not tables >= {"entries", "misses"}:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version = {FORMAT}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk full, ...
            raise StoreError(
                f"the request cache {self.path} failed: {exc}. Results it already holds are kept "
                f"(if the disk is full or the file unwritable, fix that); then run the same command "
                f"again to resume"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(str(exc)) from exc

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[None]:
        """BEGIN IMMEDIATE: take the write lock up front, where the busy timeout applies, instead
        of upgrading a read transaction, which SQLite refuses at once with "database is locked".

        Only results are fsync'd on commit; hit counts and misses survive a crash of the process
        (WAL) but not of the machine, which spares a cached rerun one fsync per lookup.
        """
        with self._lock, self._errors():
            if durable != self._durable:
                self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _load(self, adapter: TypeAdapter[Any], key: str, raw: str, what: str) -> Any:
        """Rows are checked on read: a row that no longer parses is damage to report, not a miss."""
        try:
            return adapter.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise self._corrupt(
                f"the {what} of entry {key[:12]} no longer parse: {first['msg']} at {list(first['loc'])}"
            ) from exc

    def get(self, key: str) -> list[Sample] | None:
        return self.get_many([key])[0]

    def get_many(self, keys: list[str]) -> list[list[Sample] | None]:
        """Look up a batch in one query; each hit is counted, so `stats` shows what was saved."""
        if not keys:
            return []
        unique = list(dict.fromkeys(keys))
        found: dict[str, list[Sample]] = {}
        now = time.time()
        with self._write(durable=False):
            for i in range(0, len(unique), 900):  # under SQLite's bound-parameter limit
                chunk = unique[i : i + 900]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"UPDATE entries SET hits = hits + 1, last_hit = ? WHERE key IN ({marks}) RETURNING key, samples",
                    [now, *chunk],
                ).fetchall()
                found.update((k, self._load(_SAMPLES, k, s, "samples")) for k, s in rows)
        return [found.get(k) for k in keys]

    def put(self, key: str, parts: dict[str, Any], samples: list[Sample]) -> None:
        """Store one result, durably, before returning; an existing entry is kept as it is."""
        blob = _canonical([s.model_dump(mode="json") for s in samples])
        with self._write():
            self._db.execute(
                "INSERT OR IGNORE INTO entries (key, model, prompt, parts, samples, created) VALUES (?, ?, ?, ?, ?, ?)",
                (key, _model_of(parts), _prompt_of(parts), _canonical(parts), blob, time.time()),
            )

    def record_miss(self, key: str, parts: dict[str, Any]) -> None:
        self.record_misses([(key, parts)])

    def record_misses(self, misses: list[tuple[str, dict[str, Any]]]) -> None:
        """Keep the most recent misses (one row per key) for `explain`."""
        if not misses:
            return
        now = time.time()
        with self._write(durable=False):
            for key, parts in misses:
                self._db.execute("DELETE FROM misses WHERE key = ?", (key,))
                self._db.execute(
                    "INSERT INTO misses (key, model, parts, time) VALUES (?, ?, ?, ?)",
                    (key, _model_of(parts), _canonical(parts), now),
                )
            self._db.execute("DELETE FROM misses WHERE id <= (SELECT MAX(id) FROM misses) - ?", (MAX_MISSES,))

    def stats(self) -> CacheStats:
        with self._lock, self._errors():
            entries, hits = self._db.execute("SELECT COUNT(*), COALESCE(SUM(hits), 0) FROM entries").fetchone()
            misses = self._db.execute("SELECT COUNT(*) FROM misses").fetchone()[0]
            models = dict(
                self._db.execute(
                    "SELECT COALESCE(model, '(none)'), COUNT(*) FROM entries GROUP BY model ORDER BY 2 DESC"
                )
            )
        size = sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists())
        return CacheStats(
            path=str(self.path), entries=entries, size_bytes=size, hits=hits, misses=misses, models=models
        )

    def _rows(self, where: str, args: list[Any]) -> list[_Candidate]:
        with self._lock, self._errors():
            rows = self._db.execute(
                f"SELECT key, model, created, parts FROM entries {where} ORDER BY created DESC LIMIT ?",
                [*args, SCAN_LIMIT],
            ).fetchall()
        return [_Candidate(k, m, c, flatten(self._load(_PARTS, k, p, "parts"))) for k, m, c, p in rows]

    def explain(self, limit: int = 20) -> list[MissExplanation]:
        """The most recent misses, newest first, each against the cache as it was then."""
        with self._lock, self._errors():
            rows = self._db.execute("SELECT key, parts, time FROM misses ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        recent: dict[str, list[_Candidate]] = {}
        return [self._explain(k, self._load(_PARTS, k, p, "parts"), t, recent) for k, p, t in rows]

    def explain_key(self, parts: dict[str, Any]) -> MissExplanation:
        """Why these parts miss (or hit) against the cache as it is now."""
        key, model = cache_key(parts), _model_of(parts)
        with self._lock, self._errors():
            if self._db.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone():
                return MissExplanation(
                    key=key, model=model, nearest_key=key, nearest_model=model, note="this request is cached: it hits"
                )
        return self._explain(key, parts, None, {})

    def _pool(
        self,
        key: str,
        parts: dict[str, Any],
        model: str | None,
        when: float | None,
        recent: dict[str, list[_Candidate]],
    ) -> list[_Candidate]:
        """Entries with the same prompt (found by index, however old), plus the most recent ones.

        The same question asked before is what explains a miss; the recent entries cover a
        prompt that is itself new. `model` None means any model.
        """
        same_model, model_args = ("AND model IS ?", [model]) if model is not None else ("", [])
        scope = "any" if model is None else f"m:{model}"
        if scope not in recent:
            recent[scope] = self._rows(f"WHERE 1 {same_model}", model_args)
        same_prompt = self._rows(f"WHERE prompt = ? {same_model}", [_prompt_of(parts), *model_args])
        seen: set[str] = set()
        pool = []
        for c in [*same_prompt, *recent[scope]]:
            # Entries written after the miss (usually its own result) did not cause it.
            if c.key != key and c.key not in seen and (when is None or c.created < when):
                seen.add(c.key)
                pool.append(c)
        return pool

    def _explain(
        self, key: str, parts: dict[str, Any], when: float | None, recent: dict[str, list[_Candidate]]
    ) -> MissExplanation:
        model = _model_of(parts)
        result = MissExplanation(key=key, model=model, time=when)
        flat = flatten(parts)
        pool = self._pool(key, parts, model, when, recent) if model is not None else []
        if not pool:
            result.note = f"the cache {'had' if when is not None else 'has'} no entry for model {model!r}"
            pool = self._pool(key, parts, None, when, recent)
            if not pool:
                result.note += " (nor for any other model)"
                return result
        best, best_rank, best_paths = None, None, []
        for c in pool:
            paths = diff_paths(c.flat, flat)
            # Fewest differences; on a tie, the entry with the same messages, then the one whose
            # differing texts share the longest start (an edited prompt), then the newest.
            shared = sum(
                len(os.path.commonprefix([a, b]))
                for a, b in ((c.flat.get(p), flat.get(p)) for p in paths)
                if isinstance(a, str) and isinstance(b, str)
            )
            rank = (len(paths), sum(p.startswith("request.messages") for p in paths), -shared, -c.created)
            if best_rank is None or rank < best_rank:
                best, best_rank, best_paths = c, rank, paths
        assert best is not None
        result.nearest_key, result.nearest_model = best.key, best.model
        result.differences = [field_diff(p, best.flat.get(p, ABSENT), flat.get(p, ABSENT)) for p in best_paths]
        return result

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prompt_of(parts: dict[str, Any]) -> str:
    """Hash of the messages alone: entries with the same prompt explain a miss best."""
    request = parts.get("request")
    messages = request.get("messages") if isinstance(request, dict) else None
    return hashlib.sha256(_canonical(messages).encode("utf-8")).hexdigest()


def _model_of(parts: dict[str, Any]) -> str | None:
    teacher = parts.get("teacher")
    model = teacher.get("model") if isinstance(teacher, dict) else None
    return str(model) if model is not None else None
