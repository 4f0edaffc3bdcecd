"""`executor: ray` decides exactly what the local runner decides, on a real Ray cluster.

One local Ray cluster with 2 CPUs serves the whole module. The same records go through
`run_filters` and `run_filters_ray` and every shard is compared: kept ids in order, drop
reasons, edited messages, the events each filter wrote. A pipeline run interrupted by a filter
that fails once is resumed under Ray: committed shards stay as they were, are not filtered
again, and the result equals an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from util import pipeline

from distill.config.loader import parse_config
from distill.errors import ConfigError, PluginError
from distill.executor.local import StageContext, run_filters
from distill.filter import KEEP, DistributedDedup, Drop, ExactKeys, Filter
from distill.hookspecs import hookimpl
from distill.io.store import StageStore
from distill.plugin import Options, PluginContext
from distill.records import Candidate, Message, Record
from distill.registry import make_registry

pytestmark = pytest.mark.slow  # starts a Ray cluster

TESTS = Path(__file__).resolve().parents[1]
WORDS = [
    w + s
    for w in (
        "alpha beta gamma delta omega router signal channel cable modem light power reset wifi "
        "band mesh guest port speed drop"
    ).split()
    for s in ("", "s", "ed", "ing")
]


def make_records(n: int, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """Instructions with planted exact copies (case, punctuation), one-word edits, e-mail
    addresses that differ only in what pii redacts, refusals, one-word and too-long texts, a few
    records without a user message; every other record is "generated" (compared with seeds)."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    records: list[Record] = []
    bases: list[str] = []
    for i in range(n):
        u = rng.random()
        if bases and u < 0.10:
            prompt = rng.choice(bases).upper() + "!"
        elif bases and u < 0.22:
            w = rng.choice(bases).split()
            w[rng.randrange(len(w))] = rng.choice(WORDS)
            prompt = " ".join(w)
        elif u < 0.26:
            prompt = f"Please email {rng.choice(['ann', 'bob'])}{rng.randrange(3)}@acme-mail.io about {words(8)}"
        else:
            prompt = "How do I " + words(rng.randint(8, 14))
            bases.append(prompt)
        v = rng.random()
        response = (
            "I'm sorry, but I can't help with that."
            if v < 0.05
            else "ok"
            if v < 0.1
            else f"Call 415-555-0132 or {words(6)}"
            if v < 0.15
            else words(rng.randint(4, 30))
        )
        messages = [Message(role="user", content=prompt), Message(role="assistant", content=response)]
        if i % 397 == 5:
            messages = [Message(role="system", content="Be brief."), Message(role="assistant", content=response)]
        r = Record(id=f"r{i:05d}", messages=messages, metadata={"generated_by": "gen"} if i % 2 else {})
        if i % 3:
            r.candidates = [Candidate(content=response, score=float((i * 7919) % 101))]
        records.append(r)
    seeds = [
        Record(
            id=f"s{j}",
            messages=[Message(role="user", content=bases[j * 7].lower())],
            provenance={"sources": [{"dataset": "acme", "row": j, "license": "CC0-1.0"}]},
        )
        for j in range(20)
    ]
    return records, seeds


def run_stage(
    executor: str,
    spec: list[tuple[str | type[Filter], dict]],
    records: list[Record],
    seeds: list[Record],
    out: Path,
    batch_size: int,
) -> tuple[StageStore, Any]:
    registry = make_registry()
    filters = []
    for name, options in spec:
        cls = name if isinstance(name, type) else registry.get("filter", name).cls
        f = cls(cls.Options(**options))
        f.setup(PluginContext(base_dir=out, seeds=lambda: [s.model_copy(deep=True) for s in seeds]))
        filters.append(f)
    store = StageStore(out, "clean", "filter", "digest")
    ctx = StageContext(stage="clean", store=store, run_seed=0, notify=lambda *a: None)
    run = None
    if executor == "local":
        run_filters(ctx, filters, records, batch_size)
    else:
        from distill.ray.filters import run_filters_ray

        run = run_filters_ray(ctx, filters, records, batch_size)
    store.finish({})
    return store, run


def view(r: Record) -> tuple:
    return (
        r.id,
        [(m.role, m.content) for m in r.messages],
        [(e.stage, e.action, e.plugin, e.plugin_version, e.reason) for e in r.provenance.events],
    )


def shards(store: StageStore) -> list[dict]:
    """Every shard's counts, reasons and edits, and its records as the filters left them."""
    out = []
    for s in store.manifest.shards:
        read = [
            Record.model_validate_json(line)
            for name in (s.kept_file, s.rejected_file)
            for line in (store.dir / name).read_text().splitlines()
            if line.strip()
        ]
        out.append(
            {
                "inputs": s.inputs,
                "kept": s.kept,
                "rejected": s.rejected,
                "reasons": s.reasons,
                "edits": s.edits,
                "records": [view(r) for r in read],
            }
        )
    return out


MIXED = [
    ("length", {"field": "response", "min_words": 2}),
    ("refusal", {}),
    ("pii", {}),
    ("exact-dedup", {}),
    ("near-dedup", {}),
    ("length", {"field": "prompt", "max_words": 16}),
]


def test_ray_and_local_write_the_same_shards(ray_cluster, tmp_path):
    records, seeds = make_records(3000)
    local, _ = run_stage("local", MIXED, records, seeds, tmp_path / "local", 250)
    remote, run = run_stage("ray", MIXED, records, seeds, tmp_path / "ray", 250)
    assert run.plan == ["map", "map", "map", "exact", "near", "map"]
    assert shards(remote) == shards(local)
    # the input exercises every path: each filter drops, dedup against records and seeds, edits
    reasons = " | ".join(local.manifest.reasons())
    for key in (
        "length: response too short",
        "length: prompt too long",
        "refusal: refusal",
        "exact-dedup: duplicate",
        "near-dedup: near-duplicate",
        "exact-dedup: missing field",
    ):
        assert key in reasons
    events = [e for r in local.rejected() for e in r.provenance.events if e.action == "dropped"]
    for text in (
        "near-duplicate: of record",
        "near-duplicate: of seed 'acme'",
        "same normalised prompt as record",
        "same normalised prompt as seed 'acme'",
    ):
        assert any(text in (e.reason or "") for e in events), text
    assert local.manifest.edits()["pii: redacted"] > 100


def test_keep_best_and_a_driver_side_filter(ray_cluster, tmp_path):
    """near-dedup `keep: best` (whole input, score order) runs distributed; the ROUGE-L novelty
    filter keeps state only its local code rebuilds, so it and pii after it run on the driver."""
    records, seeds = make_records(1200, seed=1)
    spec = [("near-dedup", {"keep": "best", "threshold": 0.5}), ("instruction-novelty", {}), ("pii", {})]
    local, _ = run_stage("local", spec, records, seeds, tmp_path / "local", 100)
    remote, run = run_stage("ray", spec, records, seeds, tmp_path / "ray", 100)
    assert run.plan == ["near", "driver", "driver"]
    assert shards(remote) == shards(local)
    dropped = [r for r in local.rejected() if r.provenance.events[-1].plugin == "near-dedup"]
    assert len(dropped) > 50
    # keep: best really differs from keep: earliest here (a later, better-scored copy survives)
    assert any(
        int(r.id[1:]) < int(r.provenance.events[-1].reason.split("record r")[1][:5])
        for r in dropped
        if "of record" in (r.provenance.events[-1].reason or "")
    )


def last_word(text: str) -> str:
    return text.split()[-1].casefold() if text.split() else ""


def first_user_message(record: Record) -> str | Drop:
    users = [m.content for m in record.messages if m.role == "user"]
    return users[0] if users else Drop("last-word: no user message")


def generated(record: Record) -> bool:
    return "generated_by" in record.metadata


class LastWordDedup(Filter):
    """A third-party exact dedup (one record per last word of the instruction, none that ends
    like a seed), with state that only its own `restore` rebuilds, and its `distributed()`."""

    name = "last-word-dedup"

    def __init__(self, options=None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self.seen: dict[str, str] = {}
        self.seeds: dict[str, str] = {}

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        for s in context.seeds() if context.seeds else []:
            self.seeds.setdefault(last_word(s.messages[0].content), f"seed {s.id}")

    def filter_batch(self, records):
        out = []
        for r in records:
            text = first_user_message(r)
            if isinstance(text, Drop):
                out.append(text)
                continue
            k = last_word(text)
            if generated(r) and k in self.seeds:
                out.append(Drop(f"last-word: same as {self.seeds[k]}"))
            elif k in self.seen:
                out.append(Drop(f"last-word: same as record {self.seen[k]}"))
            else:
                self.seen[k] = r.id
                out.append(KEEP)
        return out

    def restore(self, kept):
        for r in kept:
            text = first_user_message(r)
            if not isinstance(text, Drop):
                self.seen.setdefault(last_word(text), r.id)

    def distributed(self):
        return DistributedDedup(
            grouping=ExactKeys(key=last_word, seeds=dict(self.seeds)),
            read=first_user_message,
            against_seeds=generated,
            reason="last-word: same as {of}",
        )


def test_a_third_party_filter_that_describes_its_grouping_runs_distributed(ray_cluster, tmp_path):
    """The executor knows no dedup plugin by name: any filter's `distributed()` gets it there."""
    records, seeds = make_records(600, seed=3)
    spec = [("length", {"field": "response", "min_words": 2}), (LastWordDedup, {}), ("pii", {})]
    local, _ = run_stage("local", spec, records, seeds, tmp_path / "local", 100)
    remote, run = run_stage("ray", spec, records, seeds, tmp_path / "ray", 100)
    assert run.plan == ["map", "exact", "map"]
    assert shards(remote) == shards(local)
    reasons = [e.reason or "" for r in local.rejected() for e in r.provenance.events if e.action == "dropped"]
    for text in ("last-word: same as record", "last-word: same as seed", "last-word: no user message"):
        assert any(text in reason for reason in reasons), text


class Flaky(Filter):
    """Keeps everything; fails once on the batch holding `fail_on`; logs every record it sees."""

    name = "flaky"

    class Options(Options):
        marker: str
        fail_on: str
        seen: str = Field(description="A folder: one file per call, listing the record ids.")

    def filter_batch(self, records):
        ids = [r.id for r in records]
        (Path(self.options.seen) / f"{ids[0] if ids else 'empty'}-{os.getpid()}").write_text("\n".join(ids))
        marker = Path(self.options.marker)
        if self.options.fail_on in ids and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError("the network blinked")
        return [KEEP] * len(records)


class Plugins:
    @hookimpl
    def register_filters(self, register):
        register(Flaky)


def config(tmp_path: Path, out: str, executor: str, marker: Path, seen: Path, records: list[Record]) -> dict:
    seeds = tmp_path / "seeds.jsonl"
    if not seeds.exists():
        seeds.write_text(
            "".join(
                json.dumps({"prompt": r.messages[0].content, "response": r.messages[-1].content}) + "\n"
                for r in records
                if r.messages[0].role == "user"
            )
        )
    seen.mkdir(exist_ok=True)
    stage: dict[str, Any] = {
        "kind": "filter",
        "name": "clean",
        "batch_size": 100,
        "executor": executor,
        "filters": [
            {"plugin": "length", "options": {"field": "response", "min_words": 2}},
            "pii",
            "exact-dedup",
            {"plugin": "near-dedup", "options": {"field": "both"}},
            {"plugin": "flaky", "options": {"marker": str(marker), "fail_on": "", "seen": str(seen)}},
        ],
    }
    return {
        "output": str(tmp_path / out),
        "seed": 1,
        "cache": {"enabled": False},
        "seeds": [{"path": str(seeds), "license": "CC0-1.0", "name": "acme"}],
        "stages": [stage],
    }


def opened(root: Path, stage: str, kind: str = "filter") -> StageStore:
    """A stage's store as it is (opening it under another digest would move it aside)."""
    digest = json.loads((root / "stages" / stage / "manifest.json").read_text())["hash"]
    return StageStore(root, stage, kind, digest)


def test_an_interrupted_ray_run_resumes_without_redoing_committed_shards(ray_cluster, tmp_path):
    records, _ = make_records(1000, seed=2)
    marker, seen, never = tmp_path / "failed-once", tmp_path / "seen", tmp_path / "never-fails"
    never.write_text("")
    pipeline(config(tmp_path, "plain", "local", never, seen, records), ("test", Plugins())).run()
    plain = opened(tmp_path / "plain", "clean")
    batch4 = plain.dir / plain.manifest.shards[4].kept_file
    cfg = config(tmp_path, "out", "ray", marker, seen, records)
    cfg["stages"][0]["filters"][-1]["options"]["fail_on"] = json.loads(batch4.read_text().splitlines()[3])["id"]
    for f in seen.iterdir():
        f.unlink()
    with pytest.raises(
        PluginError,
        match=r"filter plugin 'flaky' failed in filter_batch on batch 4 of stage "
        r"'clean' \(records .*\): RuntimeError: the network blinked",
    ):
        pipeline(cfg, ("test", Plugins())).run()
    store = opened(tmp_path / "out", "clean")
    assert len(store.manifest.shards) == 4  # every batch before the failing one, as locally
    files = [store.dir / n for s in store.manifest.shards for n in (s.kept_file, s.rejected_file)]
    committed = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    done_before = {r.id for r in store.kept()} | {r.id for r in store.rejected()}
    for f in seen.iterdir():
        f.unlink()

    result = pipeline(cfg, ("test", Plugins())).run()
    assert [s.skipped for s in result.stages] == [True, False]
    assert {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files} == committed
    seen_again = {i for f in seen.iterdir() for i in f.read_text().split()}
    assert seen_again and not seen_again & done_before  # no committed record was filtered again

    ours, theirs = opened(tmp_path / "out", "clean"), opened(tmp_path / "plain", "clean")
    assert [s["records"] for s in shards(ours)] == [s["records"] for s in shards(theirs)]
    assert ours.manifest.totals() == theirs.manifest.totals()
    assert ours.manifest.reasons() == theirs.manifest.reasons() and sum(ours.manifest.reasons().values()) > 100

    # the executor is where filters run, not what they decide: switching it redoes nothing
    cfg["stages"][0]["executor"] = "local"
    again = pipeline(cfg, ("test", Plugins())).run()
    assert [s.skipped for s in again.stages] == [True, True]


def test_a_filter_the_workers_cannot_import_is_named(ray_cluster, tmp_path, monkeypatch):
    """A plugin installed on the driver only: the stage fails with the missing module, not a hang
    or a Ray traceback."""
    (tmp_path / "driver_only_filters.py").write_text(
        "from distill.filter import Filter\n\nclass Shy(Filter):\n    name = 'shy'\n\n"
        "    def check(self, record):\n        return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from driver_only_filters import Shy

    from distill.ray.filters import run_filters_ray

    records = [Record(id=f"r{i}", messages=[Message(role="user", content=f"question {i}")]) for i in range(30)]
    store = StageStore(tmp_path / "out", "clean", "filter", "digest")
    ctx = StageContext(stage="clean", store=store, run_seed=0, notify=lambda *a: None)
    with pytest.raises(
        PluginError,
        match="filter stage 'clean' failed on Ray: ModuleNotFoundError: No module named 'driver_only_filters'",
    ):
        run_filters_ray(ctx, [Shy()], records, 10)
    assert store.manifest.shards == []


@pytest.mark.parametrize(
    "stage, expected",
    [
        ({"executor": "spark"}, r"stages\[0\]\.executor: Input should be 'local' or 'ray' \(got 'spark'\)"),
        ({"ray": {"num_cpus": 2}}, r"stages\[0\]\.ray: ray options apply to `executor: ray` only"),
        ({"executor": "ray", "ray": {"address": "auto", "num_cpus": 2}}, r"stages\[0\]\.ray: num_cpus sizes a local"),
        (
            {"executor": "ray", "ray": {"adress": "auto"}},
            r"stages\[0\]\.ray\.adress: unknown key \(did you mean 'address'",
        ),
        ({"executor": "ray", "ray": {"address": "http://head"}}, r"stages\[0\]\.ray\.address: address must be"),
    ],
)
def test_bad_executor_config_names_the_key(tmp_path, stage, expected):
    cfg = {
        "output": str(tmp_path / "out"),
        "seeds": [{"path": "s.jsonl", "license": "CC0-1.0"}],
        "stages": [{"kind": "filter", "filters": ["length"], **stage}],
    }
    with pytest.raises(ConfigError, match=expected):
        parse_config(cfg)


def _interrupted(store: StageStore, after: int) -> None:
    """Make `store` fail (as a killed run would) when it is about to commit shard `after`."""
    commit = store.commit

    def failing(*args, **kwargs):
        if store.next_index >= after:
            raise KeyboardInterrupt("killed")
        return commit(*args, **kwargs)

    store.commit = failing  # type: ignore[method-assign]


@pytest.mark.parametrize("keep", ["earliest", "best"])
def test_near_dedup_streamed_from_shards_and_resumed_under_both_executors(ray_cluster, tmp_path, keep):
    """The stage's input is a lazy `UpstreamRecords` over real shards (as the pipeline gives
    it), near-dedup uses its bounded index locally, and a run killed after three shards resumes
    (restoring from the committed shards): both executors write the same shards."""
    from distill.io.upstream import UpstreamRecords

    records, seeds = make_records(1500, seed=4)
    upstream = StageStore(tmp_path / "in", "gen", "map", "digest")
    for b in range(0, len(records), 200):
        upstream.commit(records[b : b + 200], [], inputs=len(records[b : b + 200]))
    upstream.finish({})
    results = []
    for executor in ("local", "ray"):
        out = tmp_path / executor
        for attempt in ("killed", "resumed"):
            f = near_filter(keep)
            f.setup(PluginContext(base_dir=out, seeds=lambda: [s.model_copy(deep=True) for s in seeds]))
            store = StageStore(out, "clean", "filter", "digest")
            if attempt == "killed":
                _interrupted(store, 3)
            ctx = StageContext(stage="clean", store=store, run_seed=0, notify=lambda *a: None)
            try:
                if executor == "local":
                    run_filters(ctx, [f], UpstreamRecords(upstream), 150)
                else:
                    from distill.ray.filters import run_filters_ray

                    run_filters_ray(ctx, [f], UpstreamRecords(upstream), 150)
            except KeyboardInterrupt:
                assert attempt == "killed"
            finally:
                f.close()
        store = StageStore(out, "clean", "filter", "digest")
        store.finish({})
        results.append(store)
    local, remote = results
    assert shards(remote) == shards(local)
    assert sum(1 for r in local.rejected() if r.provenance.events[-1].plugin == "near-dedup") > 50


def near_filter(keep: str) -> Filter:
    cls = make_registry().get("filter", "near-dedup").cls
    return cls(cls.Options(keep=keep, threshold=0.5), storage="disk")
