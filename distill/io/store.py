"""Durable stage output: append-only JSONL shards, a manifest, and a lock.

A shard is committed in three steps, each durable before the next: the shard files are
written to temporary names, flushed and fsync'd; they are renamed into place; the manifest
that lists them is rewritten the same way. The manifest is the only truth: a shard file it
does not list is debris from a killed run and is removed on resume, so a killed run loses
at most the batch in flight and never duplicates a record.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from distill.errors import StoreError
from distill.layout import KEPT_SHARD, MANIFEST, REJECTED_SHARD
from distill.records import Event, Record

#: Where `repair` puts what it takes out of a stage: never deleted, someone may have paid for it.
DAMAGED = "damaged"
_SHARD_NAME = re.compile(r"(kept|rejected)-\d{5,}\.jsonl")


class ShardInfo(BaseModel):
    index: int
    kept_file: str
    rejected_file: str
    inputs: int = Field(description="Records that entered the stage in this batch.")
    generated: int = Field(0, description="New records the stage created in this batch.")
    kept: int
    rejected: int
    reasons: dict[str, int] = Field(default_factory=dict)
    edits: dict[str, int] = Field(default_factory=dict, description="Kept records changed here, by reason.")
    sha256: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kept_file", "rejected_file")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        # A manifest names files inside its own folder, nothing else (no `../`, no absolute path).
        if not _SHARD_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a shard file name")
        return name


class StageManifest(BaseModel):
    stage: str
    kind: str
    hash: str = Field(description="Digest of this stage's config and every stage before it.")
    shards: list[ShardInfo] = Field(default_factory=list)
    complete: bool = False
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    stats: dict[str, Any] = Field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        return {
            "in": sum(s.inputs for s in self.shards),
            "generated": sum(s.generated for s in self.shards),
            "kept": sum(s.kept for s in self.shards),
            "rejected": sum(s.rejected for s in self.shards),
        }

    def reasons(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for s in self.shards:
            c.update(s.reasons)
        return c

    def edits(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for s in self.shards:
            c.update(s.edits)
        return c


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (Linux opens folders read-only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: for reading files that another version
    of distill, or a person, may have written differently."""
    return value if isinstance(value, dict) else {}


def atomic_write(path: Path, data: bytes) -> str:
    """Write, fsync, rename, fsync the folder; returns the sha256 of what was written.

    The temporary name carries the pid, so processes writing the same file at once (the
    embedded model's hash memo) never write into each other's temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:  # a full disk must not stay full of half-written temporary files
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class StageStore:
    """One stage's folder: committed shards and the manifest that lists them."""

    def __init__(self, root: Path, stage: str, kind: str, digest: str) -> None:
        self.dir = root / "stages" / stage
        self.stage, self.kind, self.digest = stage, kind, digest
        self.stale = False
        self.moved_to: Path | None = None
        self.manifest = self._open()

    def _open(self) -> StageManifest:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / MANIFEST
        if not path.exists():
            return StageManifest(stage=self.stage, kind=self.kind, hash=self.digest)
        try:
            manifest = StageManifest.model_validate_json(path.read_bytes())
        except (ValidationError, ValueError) as exc:
            raise StoreError(
                f"manifest of stage {self.stage!r} is corrupted ({path}): {manifest_problem(exc)}. "
                f"{repair_hint(self.dir.parent.parent)}"
            ) from None
        if manifest.hash != self.digest:  # its config or its input changed: redo it
            self.stale = bool(manifest.shards)
            if self.stale:
                self.moved_to = self._move_aside()
                self.dir.mkdir(parents=True, exist_ok=True)
            return StageManifest(stage=self.stage, kind=self.kind, hash=self.digest)
        return manifest

    def _move_aside(self) -> Path:
        """Keep a stale stage's output under `stale/` rather than deleting it: it may hold
        generations someone paid for."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        dest = self.dir.parent.parent / "stale" / f"{self.stage}-{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.dir, dest)
        return dest

    def clean_debris(self) -> list[str]:
        """Delete files no committed shard lists: a killed run's batch in flight."""
        listed = {MANIFEST}
        for s in self.manifest.shards:
            listed.update((s.kept_file, s.rejected_file))
        removed = []
        for f in self.dir.iterdir():
            if f.name not in listed:
                f.unlink()
                removed.append(f.name)
        return removed

    def verify(self) -> None:
        """Check every committed shard against its digest, so corruption is reported, not read."""
        damage = first_damaged_shard(self.dir, self.manifest)
        if damage is not None:
            i, name, why = damage
            raise StoreError(
                f"stage {self.stage!r}: committed shard {name} {why} ({self.dir / name}). "
                f"{repair_hint(self.dir.parent.parent)}"
            )

    @property
    def next_index(self) -> int:
        return len(self.manifest.shards)

    def commit(
        self,
        kept: list[Record],
        rejected: list[Record],
        *,
        inputs: int,
        generated: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> ShardInfo:
        if inputs + generated != len(kept) + len(rejected):
            raise StoreError(
                f"stage {self.stage!r} would lose records: {inputs} in + {generated} generated "
                f"!= {len(kept)} kept + {len(rejected)} rejected"
            )
        i = self.next_index
        names = (KEPT_SHARD.format(index=i), REJECTED_SHARD.format(index=i))
        digests = {}
        for name, recs in zip(names, (kept, rejected)):
            data = "".join(r.model_dump_json() + "\n" for r in recs).encode()
            digests[name] = self._write(name, data)
        reasons = Counter(_reason(r) for r in rejected)
        edits = Counter(
            _label(e) for r in kept for e in r.provenance.events if e.action == "edited" and e.stage == self.stage
        )
        info = ShardInfo(
            index=i,
            kept_file=names[0],
            rejected_file=names[1],
            inputs=inputs,
            generated=generated,
            kept=len(kept),
            rejected=len(rejected),
            reasons=dict(reasons),
            edits=dict(edits),
            sha256=digests,
            meta=meta or {},
        )
        self.manifest.shards.append(info)
        try:
            self._write_manifest()
        except StoreError:
            self.manifest.shards.pop()  # not committed: the files it named are debris
            raise
        return info

    def finish(self, stats: dict[str, Any] | None = None) -> None:
        before = self.manifest.model_copy()
        self.manifest.complete = True
        self.manifest.finished_at = datetime.now(UTC)
        self.manifest.stats = stats or {}
        try:
            self._write_manifest()
        except StoreError:
            self.manifest = before
            raise

    def _write_manifest(self) -> None:
        self._write(MANIFEST, self.manifest.model_dump_json(indent=1).encode())

    def _write(self, name: str, data: bytes) -> str:
        try:
            return atomic_write(self.dir / name, data)
        except OSError as exc:
            raise StoreError(write_failure(self.dir / name, exc, f"stage {self.stage!r}")) from None

    def kept(self) -> Iterator[Record]:
        yield from read_shards(self.dir, [s.kept_file for s in self.manifest.shards])

    def rejected(self) -> Iterator[Record]:
        yield from read_shards(self.dir, [s.rejected_file for s in self.manifest.shards])


def _reason(record: Record) -> str:
    for e in reversed(record.provenance.events):
        if e.action == "dropped":
            return _label(e)
    return "unspecified"


def _label(event: Event) -> str:
    key = _reason_key(event.reason or "unspecified")
    return f"{event.plugin}: {key}" if event.plugin else key


def _reason_key(reason: str) -> str:
    """Group reasons for counting: `line 7: invalid JSON: ...` counts as `invalid JSON`."""
    parts = reason.split(": ")
    if len(parts) > 1 and (parts[0].startswith("line ") or parts[0].startswith("row ")):
        parts = parts[1:]
    return parts[0][:120]


def read_shards(folder: Path, names: list[str]) -> Iterator[Record]:
    for name in names:
        with open(folder / name, "rb") as f:
            for n, line in enumerate(f, 1):
                try:
                    yield Record.model_validate_json(line)
                except ValidationError as exc:
                    raise StoreError(
                        f"{folder / name} line {n}: not a valid record: {exc.errors()[0]['msg']}"
                    ) from None


def first_damaged_shard(folder: Path, manifest: StageManifest) -> tuple[int, str, str] | None:
    """(index, file, what is wrong) of the first committed shard that is missing or damaged."""
    for i, s in enumerate(manifest.shards):
        for name in (s.kept_file, s.rejected_file):
            p = folder / name
            if not p.is_file():
                return i, name, "is missing"
            if s.sha256.get(name):
                if _sha256_file(p) != s.sha256[name]:
                    return i, name, "is corrupted (its digest does not match the manifest)"
            else:  # written before shards had digests: at least every line must be a record
                try:
                    for _ in read_shards(folder, [name]):
                        pass
                except StoreError as exc:
                    return i, name, f"is corrupted ({exc})"
    return None


def write_failure(path: Path, exc: OSError, who: str = "distill") -> str:
    """The message for a write the file system refused (full, read-only, no permission)."""
    return (
        f"{who}: cannot write {path}: {exc.strerror or exc}. Everything committed before is kept; "
        f"free some space or make the folder writable, then run the same command again to resume"
    )


def manifest_problem(exc: Exception) -> str:
    """What is wrong with an unreadable manifest, in one line."""
    if isinstance(exc, ValidationError) and exc.errors():
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        return f"{where}: {e['msg']}" if where else e["msg"]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def repair_hint(root: Path) -> str:
    return (
        f"Run `distill repair {root}` to set the damaged part aside (under {root / DAMAGED}); the next "
        "run redoes only that, and the teacher calls it already made come from the request cache"
    )


def repair(root: Path) -> list[str]:
    """Set aside what `verify` and the manifests' parsing reject, so that the next run redoes it.

    A stage whose manifest cannot be read is moved whole to `damaged/`. A stage with a missing
    or damaged shard keeps every shard before it; that shard and the ones after it (they were
    computed from what came before) move to `damaged/`, and its manifest is cut back to the
    good shards and marked incomplete, so a run resumes it from there. Nothing is deleted."""
    stages = root / "stages"
    if not stages.is_dir():
        raise StoreError(f"{root} is not a distill output folder (no stages/ inside)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    done: list[str] = []
    with RunLock(root):
        for d in sorted(p for p in stages.iterdir() if p.is_dir()):
            path = d / MANIFEST
            if not path.exists():
                continue
            dest = root / DAMAGED / f"{d.name}-{stamp}"
            try:
                manifest = StageManifest.model_validate_json(path.read_bytes())
            except (ValidationError, ValueError) as exc:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(d, dest)
                done.append(
                    f"stage {d.name!r}: its manifest is unreadable ({manifest_problem(exc)}); moved the stage "
                    f"to {dest}; the next run redoes it"
                )
                continue
            damage = first_damaged_shard(d, manifest)
            if damage is None:
                continue
            index, name, why = damage
            dest.mkdir(parents=True, exist_ok=True)
            moved = manifest.shards[index:]
            atomic_write(dest / MANIFEST, path.read_bytes())  # the manifest as it was, for the record
            for s in moved:
                for f in (s.kept_file, s.rejected_file):
                    if (d / f).exists():
                        os.replace(d / f, dest / f)
            manifest.shards = manifest.shards[:index]
            manifest.complete, manifest.finished_at, manifest.stats = False, None, {}
            atomic_write(path, manifest.model_dump_json(indent=1).encode())
            fsync_dir(dest)
            done.append(
                f"stage {d.name!r}: shard {name} {why}; moved it and the {len(moved) - 1} shard(s) after it "
                f"to {dest}, kept the {index} before it; the next run redoes the rest"
            )
    return done


class RunLock:
    """An exclusive lock on an output folder: two runs never write one output."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"another distill run (pid {holder}) is writing {self.path.parent}; wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def write_json(path: Path, data: Any) -> None:
    try:
        atomic_write(path, json.dumps(data, indent=1, default=str).encode())
    except OSError as exc:
        raise StoreError(write_failure(path, exc)) from None
