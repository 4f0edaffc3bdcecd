"""Helpers for the reliability suite: real `distill` subprocesses, their configs, and the
checks that an output folder lost, duplicated and corrupted nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.io.inspect import inspect_output
from distill.io.store import MANIFEST, StageManifest, read_shards

HERE = Path(__file__).resolve().parent
ENTRY_POINT = "reliability-test"
#: The entry points a subprocess loads: the test plugins and the first-party ones the configs use.
PLUGINS = f"tasks,dedup,quality,{ENTRY_POINT}"

TOPICS = [
    "router",
    "Wi-Fi",
    "mesh node",
    "guest network",
    "firmware",
    "port",
    "channel",
    "modem",
    "password",
    "parental controls",
]


def plugin_site(folder: Path) -> dict[str, str]:
    """An installed distribution (a `.dist-info` folder on PYTHONPATH) whose entry point in the
    `distill` group is `reliability_plugins`: subprocesses find it exactly as they would find
    a third-party plugin package. Returns the environment a subprocess needs."""
    info = folder / "distill_reliability_test-0.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distill-reliability-test\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(f"[distill]\n{ENTRY_POINT} = reliability_plugins\n")
    inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    path = os.pathsep.join([str(folder), str(HERE), *inherited])
    return {"PYTHONPATH": path, "DISTILL_PLUGINS": PLUGINS}


def child_env(site: dict[str, str], **extra: str) -> dict[str, str]:
    env = {**os.environ, **site, "PYTHONUNBUFFERED": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


def distill(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300, preexec_fn=None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def wait_for(proc: subprocess.Popen, cond, timeout: float = 60.0) -> bool:
    """Poll until `cond()` or the process ends; True when the condition was met first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if cond():
            return True
        time.sleep(0.01)
    raise AssertionError(f"the run made no progress in {timeout:g} s")


def kill_when(proc: subprocess.Popen, cond, pause: float, *, timeout: float = 60.0, wait: float = 60.0) -> int:
    """SIGKILL `proc` `pause` seconds after `cond()` holds (unless it ended first); its exit code."""
    try:
        if wait_for(proc, cond, timeout):
            time.sleep(pause)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=wait)
    return proc.returncode


def start_run(config: Path, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """`distill run CONFIG --quiet` in the background; its output goes to `log` (or nowhere)."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "distill.cli", "run", str(config), "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    finally:
        if log is not None:
            out.close()


def write_seeds(folder: Path, n: int = 30) -> Path:
    """`n` questions, a few exact duplicates (for dedup) and two broken lines (rejected at load)."""
    path = folder / "seeds.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            j = i if i % 7 else max(0, i - 1)  # every 7th repeats the previous question
            f.write(json.dumps({"prompt": f"Question {j}: how do I fix my {TOPICS[j % len(TOPICS)]} at home?"}) + "\n")
            if i == n // 2:
                f.write("{broken json\n")
        f.write('"just a string"\n')
    return path


def crash_config(
    folder: Path,
    *,
    cache: bool = True,
    delay: float = 0.02,
    filter_delay: float = 0.08,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Seeds -> self-instruct (expand) -> answers (map) -> filters -> export, with the counting teacher."""
    seeds = write_seeds(folder)
    cfg: dict[str, Any] = {
        "output": "out",
        "seed": 11,
        "cache": {"path": "requests.sqlite"} if cache else {"enabled": False},
        "seeds": [{"path": seeds.name, "license": "CC0-1.0", "name": "acme"}],
        "teachers": {
            "inventor": {"plugin": "counting-echo", "options": {"style": "instructions", "delay": delay}},
            "writer": {"plugin": "counting-echo", "options": {"n": 2, "delay": delay}},
        },
        "stages": [
            {
                "kind": "generate",
                "name": "instructions",
                "teacher": "inventor",
                "batch_size": 4,
                "task": {"plugin": "self-instruct", "options": {"num_instructions": 10}},
            },
            {
                "kind": "generate",
                "name": "answers",
                "teacher": "writer",
                "batch_size": 4,
                "task": {"plugin": "response"},
            },
            {
                "kind": "filter",
                "name": "clean",
                "batch_size": 5,
                "filters": [
                    {"plugin": "length", "options": {"min_words": 2}},
                    "exact-dedup",
                    {"plugin": "slow-pass", "options": {"delay": filter_delay}},
                ],
            },
            {"kind": "export", "name": "sft", "format": "sft"},
        ],
    }
    cfg.update(extra or {})
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def manifest(out: Path, stage: str) -> StageManifest | None:
    """The committed manifest of a stage, or None (absent, or caught mid-rename by a poller)."""
    try:
        return StageManifest.model_validate_json((out / "stages" / stage / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None


def stage_order(out: Path) -> list[str]:
    return [r.stage for r in inspect_output(out)]


def read_output(out: Path) -> dict[str, tuple[list, list]]:
    """Every stage's committed kept and rejected records, in commit order."""
    result = {}
    for stage in stage_order(out):
        m = manifest(out, stage)
        assert m is not None, f"stage {stage}: no readable manifest"
        d = out / "stages" / stage
        result[stage] = (
            list(read_shards(d, [s.kept_file for s in m.shards])),
            list(read_shards(d, [s.rejected_file for s in m.shards])),
        )
    return result


@dataclass
class Check:
    """What comparing an output with a reference found; the suite asserts lost == duplicated == 0."""

    records: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Check) -> None:
        self.records += other.records
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.problems += other.problems


def check_output(out: Path, reference: dict[str, tuple[list, list]] | None = None, *, complete: bool = True) -> Check:
    """Count records, and those lost or duplicated, against the reference run (when given);
    check every manifest is balanced, every shard matches its digest, no debris is left and
    the exported dataset holds exactly the export stage's kept records. With `complete=False`
    (a run stopped by a fault) stages may be partial and uncommitted files may remain."""
    c = Check()
    got = read_output(out)
    for r in inspect_output(out):
        if not r.balanced:
            c.problems.append(f"stage {r.stage}: unbalanced {r.totals}")
        if complete and not r.complete:
            c.problems.append(f"stage {r.stage}: not complete")
    for stage, (kept, rejected) in got.items():
        ids = [r.id for r in kept + rejected]
        c.records += len(ids)
        c.duplicated += len(ids) - len(set(ids))
        m = manifest(out, stage)
        for s in m.shards:
            for name in (s.kept_file, s.rejected_file):
                data = (out / "stages" / stage / name).read_bytes()
                if s.sha256.get(name) != hashlib.sha256(data).hexdigest():
                    c.problems.append(f"stage {stage}: {name} does not match its digest")
        listed = {MANIFEST} | {f for s in m.shards for f in (s.kept_file, s.rejected_file)}
        debris = sorted(p.name for p in (out / "stages" / stage).iterdir() if p.name not in listed)
        if debris and complete:  # a run stopped by a fault leaves them; resuming removes them
            c.problems.append(f"stage {stage}: debris {debris}")
        if reference is not None:
            want_kept, want_rejected = reference.get(stage, ([], []))
            want = Counter(r.id for r in want_kept + want_rejected)
            c.lost += sum((want - Counter(ids)).values())
            if [r.id for r in kept] != [r.id for r in want_kept]:
                c.problems.append(f"stage {stage}: kept ids differ from the reference")
            if [r.messages for r in kept] != [r.messages for r in want_kept]:
                c.problems.append(f"stage {stage}: kept records' text differs from the reference")
            if [r.id for r in rejected] != [r.id for r in want_rejected]:
                c.problems.append(f"stage {stage}: rejected ids differ from the reference")
    if reference is not None:
        missing = sorted(set(reference) - set(got))
        if missing:
            c.problems.append(f"stages missing: {missing}")
            c.lost += sum(len(k) + len(r) for s, (k, r) in reference.items() if s in missing)
    export = out / "export"
    if export.is_dir():
        for d in export.iterdir():
            if d.name.startswith("."):
                if complete:
                    c.problems.append(f"export debris: {d.name}")
                continue
            hidden = sorted(p.name for p in d.iterdir() if p.name.startswith("."))
            if hidden and complete:
                c.problems.append(f"export {d.name}: debris {hidden}")
            if complete and d.name in got:
                import datasets

                ds = datasets.load_from_disk(str(d))
                rows = list(ds["id"])
                if rows != [r.id for r in got[d.name][0]]:
                    c.problems.append(f"export {d.name}: rows differ from the stage's kept records")
                c.duplicated += len(rows) - len(set(rows))
    return c


def call_log_count(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def secret_forms(secret: str) -> list[bytes]:
    """The canary as it could be written: plain, base64 (three alignments, each trimmed of
    the characters that depend on its neighbours), hex, URL- and JSON-escaped, UTF-16."""
    import base64
    from urllib.parse import quote

    raw = secret.encode()
    forms = {
        raw,
        raw.hex().encode(),
        quote(secret).encode(),
        json.dumps(secret)[1:-1].encode(),
        secret.encode("utf-16-le"),
    }
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw)
        trimmed = enc[4 if shift else 0 : len(enc) - 4]
        if len(trimmed) >= 12:
            forms.add(trimmed)
    return sorted(forms)


def scan(paths: list[Path], secret: str) -> tuple[int, list[str]]:
    """Files read (every file under each path, recursively) and where any form of `secret` is found."""
    forms = secret_forms(secret)
    files, hits = 0, []
    for root in paths:
        candidates = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for p in candidates:
            try:
                data = p.read_bytes()
            except OSError:
                continue
            files += 1
            for form in forms:
                if form in data:
                    hits.append(f"{p}: {form[:16]!r}...")
    return files, hits


def scan_text(texts: list[str], secret: str) -> list[str]:
    forms = secret_forms(secret)
    return [t[:80] for t in texts for f in forms if f in t.encode()]
