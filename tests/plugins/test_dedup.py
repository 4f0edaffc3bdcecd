"""Dedup filters on hand-built records: exact, MinHash near-duplicates (earliest and best kept,
across batches, after resume), the self-instruct ROUGE-L novelty check, and the seed set."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from util import config_dict, pipeline

from distill.filter import KEEP, Drop
from distill.io.inspect import inspect_output
from distill.plugin import PluginContext
from distill.registry import make_registry
from distill.testing import make_record, run_filter
from distill_plugins.filters import _sketch
from distill_plugins.filters.dedup import ExactDedup, NearDedup
from distill_plugins.filters.novelty import InstructionNovelty, rouge_tokens

ROUTER = "How do I reset my Acme router to its factory settings?"
ROUTER_EDIT = "how do I QUICKLY reset my Acme router to its factory settings"  # one word inserted
FRANCE = "What is the capital of France?"


def generated(prompt: str, *, id: str, response: str | None = None, **kw):
    """A record as an expand task (self-instruct) writes it."""
    r = make_record(prompt, response, id=id, **kw)
    r.metadata["generated_by"] = "instructions"
    return r


def with_seeds(plugin, *seeds):
    plugin.setup(PluginContext(base_dir=Path("."), seeds=lambda: list(seeds)))
    return plugin


def seed(prompt: str, row: int):
    return make_record(prompt, dataset="acme-seeds", row=row)


# --- exact ------------------------------------------------------------------------------


def test_exact_dedup_against_the_seed_set_checks_generated_records_only():
    f = with_seeds(ExactDedup(), seed(FRANCE, 3), seed(ROUTER, 4))
    copy = generated("how do I reset my ACME router to its factory settings", id="g1")
    own = make_record(ROUTER, id="from-seed", row=4)  # the seed's own record passes through
    assert run_filter(f, [copy, own]) == [Drop("duplicate: same normalised prompt as seed 'acme-seeds' row 4"), KEEP]
    assert run_filter(with_seeds(ExactDedup(against_seeds=False), seed(ROUTER, 4)), [copy]) == [KEEP]


def test_exact_dedup_drops_missing_fields_and_restores_past_them():
    f = ExactDedup(field="response")
    f.restore([make_record("q", id="no-answer")])  # nothing to index, no crash
    assert run_filter(f, [make_record("q", id="x"), make_record("q", "  ", id="y")]) == [
        Drop("missing field: no response to read"),
        Drop("missing field: empty response"),
    ]


# --- near-duplicates --------------------------------------------------------------------


def test_near_dedup_keeps_the_earliest_and_names_it():
    f = NearDedup()
    recs = [make_record(ROUTER, id="a"), make_record(ROUTER_EDIT, id="b"), make_record(FRANCE, id="c")]
    assert not f.needs_whole_input()
    assert run_filter(f, recs) == [KEEP, Drop("near-duplicate: of record a (estimated Jaccard 0.72)"), KEEP]


def test_near_dedup_remembers_across_batches_and_after_restore():
    f = NearDedup()
    assert run_filter(f, [make_record(ROUTER, id="a")]) == [KEEP]
    expected = [Drop("near-duplicate: of record a (estimated Jaccard 0.72)")]
    assert run_filter(f, [make_record(ROUTER_EDIT, id="b")]) == expected
    resumed = NearDedup()
    resumed.restore([make_record(ROUTER, id="a"), make_record("q", "r", id="other")])
    assert run_filter(resumed, [make_record(ROUTER_EDIT, id="b")]) == expected


def test_near_dedup_threshold_and_shingle_size_decide():
    recs = [make_record(ROUTER, id="a"), make_record(ROUTER_EDIT, id="b")]
    assert run_filter(NearDedup(threshold=0.9), recs) == [KEEP, KEEP]
    loose = run_filter(NearDedup(shingle_size=1), recs)[1]
    assert isinstance(loose, Drop) and loose.reason.startswith("near-duplicate: of record a")
    assert float(loose.reason.split()[-1].rstrip(")")) > 0.72  # unigrams: one insertion costs less


def test_near_dedup_keep_best_keeps_the_best_scored_of_a_cluster():
    f = NearDedup(keep="best")
    assert f.needs_whole_input()
    a = make_record(ROUTER, id="a", candidates=[("x", 1.0), ("y", None)])
    b = make_record(ROUTER_EDIT, id="b", candidates=[("x", 0.2), ("y", 5.0)])
    c = make_record(ROUTER.upper(), id="c")  # unscored: lowest
    d = make_record(FRANCE, id="d")
    f.prepare([a, b, c, d])
    # decisions are by id, whatever the batches
    assert run_filter(f, [a, b]) + run_filter(f, [c, d]) == [
        Drop("near-duplicate: of record b (estimated Jaccard 0.72)"),
        KEEP,
        Drop("near-duplicate: of record b (estimated Jaccard 0.72)"),
        KEEP,
    ]


def test_near_dedup_keep_best_ties_go_to_the_earliest():
    f = NearDedup(keep="best")
    recs = [
        make_record(ROUTER, id="a", candidates=[("x", 2.0)]),
        make_record(ROUTER_EDIT, id="b", candidates=[("x", 2.0)]),
    ]
    f.prepare(recs)
    f.prepare(recs)  # deciding again gives the same answer, not "duplicate of itself"
    assert run_filter(f, recs) == [KEEP, Drop("near-duplicate: of record a (estimated Jaccard 0.72)")]
    with pytest.raises(RuntimeError, match="not in the input given to prepare"):
        f.filter_batch([make_record(FRANCE, id="new")])


def test_near_dedup_against_the_seed_set():
    seeds = [seed(FRANCE, 3), seed(ROUTER, 4)]
    f = with_seeds(NearDedup(), *seeds)
    recs = [
        generated(ROUTER_EDIT, id="g1"),
        make_record(ROUTER, id="from-seed", row=4),
        generated("Which wine goes well with a spicy curry?", id="g2"),
    ]
    assert run_filter(f, recs) == [
        Drop("near-duplicate: of seed 'acme-seeds' row 4 (estimated Jaccard 0.72)"),
        KEEP,
        KEEP,
    ]
    assert run_filter(with_seeds(NearDedup(against_seeds=False), *seeds), recs[:1]) == [KEEP]
    best = with_seeds(NearDedup(keep="best"), *seeds)
    best.prepare(recs)
    assert run_filter(best, recs)[0] == Drop("near-duplicate: of seed 'acme-seeds' row 4 (estimated Jaccard 0.72)")


def test_near_dedup_missing_fields_are_drops_not_crashes():
    f = NearDedup(field="both")
    recs = [
        make_record("q", id="a"),
        make_record("q", "", id="b"),
        make_record("?!", "...", id="c"),
        make_record("!?", "…", id="d"),
    ]
    out = run_filter(f, recs)
    assert out[:2] == [Drop("missing field: no response to read"), Drop("missing field: empty response")]
    # text without words is one empty shingle: two of them are duplicates, as exact dedup says
    assert out[2:] == [KEEP, Drop("near-duplicate: of record c (estimated Jaccard 1.00)")]
    f.prepare([])  # nothing to decide is fine too


@pytest.mark.parametrize(
    "bad", [{"shingle": 3}, {"threshold": 1.5}, {"keep": "latest"}, {"num_perm": 4}, {"shingle_size": 0}]
)
def test_near_dedup_rejects_bad_options(bad):
    with pytest.raises(ValidationError):
        NearDedup(**bad)


@pytest.mark.parametrize(
    "cls, bad",
    [
        (InstructionNovelty, {"threshhold": 0.5}),
        (InstructionNovelty, {"threshold": 1.0}),
        (ExactDedup, {"fields": "prompt"}),
        (ExactDedup, {"field": "title"}),
    ],
)
def test_other_filters_reject_bad_options(cls, bad):
    with pytest.raises(ValidationError):
        cls(**bad)


def test_unknown_option_key_is_a_config_error_naming_it(tmp_path):
    from distill.config.loader import parse_config, validate_plugin_options
    from distill.errors import ConfigError

    cfg = config_dict(tmp_path)
    cfg["stages"][2]["filters"] = [{"plugin": "near-dedup", "options": {"treshold": 0.8}}]
    with pytest.raises(ConfigError, match=r"filters\[0\]\.options\.treshold: unknown key"):
        validate_plugin_options(parse_config(cfg), make_registry())


# --- signatures -------------------------------------------------------------------------


@pytest.mark.parametrize("k, multiset", [(1, False), (2, False), (3, False), (1, True)])
def test_signatures_are_datasketch_minhash_of_the_shingle_hashes(monkeypatch, k, multiset):
    """The vectorised signature equals `datasketch.MinHash.update_batch` over the same shingle
    hashes, also when a batch is split into blocks."""
    from datasketch import MinHash

    monkeypatch.setattr(_sketch, "_BLOCK", 50)
    rng = random.Random(k)
    lists = [[rng.choice("abcdefghij") for _ in range(rng.randrange(0, 25))] for _ in range(60)]
    signer = _sketch.Signer(64, 7, k, multiset)
    sigs = signer.sign(lists)
    hashes, starts = signer.shingle_hashes(lists)
    ends = [*starts[1:], len(hashes)]
    for i in range(len(lists)):
        m = MinHash(64, seed=7, hashfunc=int)
        m.update_batch(list(hashes[starts[i] : ends[i]]))
        assert (m.hashvalues == sigs[i]).all()
    assert (signer.sign(lists[::-1]) == sigs[::-1]).all()  # a record's signature does not depend on its batch


def test_band_params_find_pairs_at_the_bound():
    b, r = _sketch.band_params(128, 0.54, 1e-3)
    assert b * r <= 128 and (1 - 0.54**r) ** b <= 1e-3
    assert (1 - 0.54 ** (r + 1)) ** (128 // (r + 1)) > 1e-3  # the longest bands that do


# --- self-instruct novelty ----------------------------------------------------------------


def test_rouge_tokens_follow_rouge_score():
    assert rouge_tokens("Hello, World! It's 2024_now.") == ["hello", "world", "it", "s", "2024", "now"]


def test_novelty_drops_a_paraphrase_of_a_seed_and_keeps_a_distinct_instruction():
    f = with_seeds(InstructionNovelty(), seed("Write a short poem about the sea at night.", 4))
    recs = [
        generated("Write a short poem about the sea at dawn.", id="g1"),
        generated("List three uses of baking soda in cleaning.", id="g2"),
        generated("Please list three uses of baking soda for cleaning.", id="g3"),
        make_record("Write a short poem about the sea at night.", id="from-seed", row=4),
    ]
    assert run_filter(f, recs) == [
        Drop("too similar: ROUGE-L 0.89 with seed 'acme-seeds' row 4"),
        KEEP,
        Drop("too similar: ROUGE-L 0.82 with record g2"),
        KEEP,
    ]
    # LCS 7 of 8 and 9 tokens: 2 * 7 / 17 is not *above* a threshold of exactly that
    assert run_filter(InstructionNovelty(threshold=14 / 17), recs[1:3]) == [KEEP, KEEP]


def test_novelty_remembers_kept_instructions_after_restore():
    f = InstructionNovelty()
    f.restore([make_record("List three uses of baking soda in cleaning.", id="g2")])
    assert run_filter(f, [make_record("Please list three uses of baking soda for cleaning.", id="g3")]) == [
        Drop("too similar: ROUGE-L 0.82 with record g2")
    ]


def test_novelty_missing_fields():
    f = InstructionNovelty(field="response")
    assert run_filter(f, [make_record("q", id="a"), make_record("q", "Sure.", id="b")]) == [
        Drop("missing field: no response to read"),
        KEEP,
    ]


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            cur = row[j]
            row[j] = prev + 1 if x == y else max(row[j], row[j - 1])
            prev = cur
    return row[-1]


def _all_pairs(texts: list[str], threshold: float) -> list[bool]:
    """The self-instruct loop as written: every new instruction against every kept one."""
    kept: list[list[str]] = []
    out = []
    for t in texts:
        a = rouge_tokens(t)
        score = max((2 * _lcs(a, b) / (len(a) + len(b)) for b in kept if a and b), default=0.0)
        out.append(score > threshold)
        if score <= threshold:
            kept.append(a)
    return out


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_novelty_equals_all_pairs_rouge_l(threshold):
    rng = random.Random(3)
    verbs = ["Write", "Explain", "List", "Describe", "Summarize"]
    things = "a poem a story the steps three reasons the history the rules of chess a recipe for bread".split()
    topics = "the sea love winter cats a router taxes the moon coffee football".split()
    texts = []
    for _ in range(150):
        words = [rng.choice(verbs), *rng.sample(things, 3), "about", *rng.sample(topics, rng.randint(1, 3))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(topics))
        texts.append(" ".join(words))
    recs = [make_record(t, id=f"r{i}") for i, t in enumerate(texts)]
    f = InstructionNovelty(threshold=threshold)
    decisions = run_filter(f, recs[:70]) + run_filter(f, recs[70:])
    dropped = [isinstance(d, Drop) for d in decisions]
    assert dropped == _all_pairs(texts, threshold)
    assert 10 < sum(dropped) < 140  # the set exercises both outcomes


# --- plugin discovery and a whole run -----------------------------------------------------


def test_discovery_stays_light():
    code = (
        "import sys\nfrom distill.registry import make_registry\nr = make_registry()\n"
        "assert {'exact-dedup', 'near-dedup', 'instruction-novelty'} <= set(r.specs['filter'])\n"
        "print(','.join(m for m in ('numpy', 'datasketch', 'rapidfuzz', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_pipeline_counts_near_duplicates_per_reason(tmp_path):
    cfg = config_dict(tmp_path)
    # the fake teacher's instructions differ in one token: near-duplicates of each other
    cfg["stages"][2]["filters"] = [
        {"plugin": "near-dedup", "options": {"keep": "best"}},
        "instruction-novelty",
        "exact-dedup",
    ]
    pipeline(cfg).run()
    (report,) = [r for r in inspect_output(tmp_path / "out") if r.stage == "clean"]
    generated_count = next(r for r in inspect_output(tmp_path / "out") if r.stage == "instructions").totals["generated"]
    assert report.reasons == {"near-dedup: near-duplicate": generated_count - 1}
    assert report.balanced and report.totals["kept"] == report.totals["in"] - (generated_count - 1)


# --- the bounded index: the same decisions as datasketch's, on the bench corpus ----------

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def bench_records(n: int, seed: int = 0, scored: bool = False) -> tuple[list, list]:
    """`n` records of the dedup benchmark's corpus (planted copies, siblings); every third is
    generated, some are unscored (keep: best ranks them last). Also 40 seeds: lower-cased
    texts of the corpus, so some generated records duplicate a seed."""
    from distill.records import Candidate, Message, Record

    sys.path.insert(0, str(_BENCH))
    try:
        from dedup_data import make_corpus
    finally:
        sys.path.remove(str(_BENCH))
    corpus = make_corpus(n, seed=seed)
    records = []
    for i, text in enumerate(corpus.texts):
        r = Record(id=f"r{i}", messages=[Message(role="user", content=text)])
        if i % 3 == 1:
            r.metadata["generated_by"] = "instructions"
        if scored and i % 5:
            r.candidates = [Candidate(content="answer", score=float((i * 7919) % 97))]
        records.append(r)
    seeds = [seed_record(corpus.texts[j].lower(), j) for j in range(0, n, max(n // 40, 1))]
    return records, seeds


def seed_record(prompt: str, row: int):
    return make_record(prompt, dataset="bench-seeds", row=row)


def decisions(f, records, batch: int) -> list:
    if f.needs_whole_input():
        f.prepare(records)
    out = []
    for b in range(0, len(records), batch):
        out.extend(f.filter_batch(records[b : b + batch]))
    f.close()
    return out


@pytest.mark.parametrize("keep", ["earliest", "best"])
@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.parametrize("n", [2500, pytest.param(20_000, marks=pytest.mark.slow)])
def test_bounded_index_decides_as_datasketch(keep, seeded, n):
    records, seeds = bench_records(n, scored=keep == "best")
    made = [NearDedup(keep=keep, storage=s) for s in ("memory", "disk", "auto")]
    if seeded:
        made = [with_seeds(f, *seeds) for f in made]
    reference, bounded, auto = (decisions(f, records, b) for f, b in zip(made, (1000, 777, 1000)))
    assert bounded == reference and auto == reference
    reasons = [d.reason for d in reference if isinstance(d, Drop)]
    assert len(reasons) > n // 12  # the planted copies are found
    assert any("of seed 'bench-seeds'" in r for r in reasons) == seeded
    assert any(r.endswith("(estimated Jaccard 1.00)") for r in reasons)  # and exact copies


def test_bounded_index_compares_within_a_batch_and_spills_midway(tmp_path):
    records, _ = bench_records(3000)
    reference = decisions(NearDedup(storage="memory"), records, 3000)  # one batch
    spilled = NearDedup(spill_after=1000)  # signatures in RAM, then in a file
    spilled.setup(PluginContext(base_dir=tmp_path, state_dir=tmp_path))
    assert decisions(spilled, records, 3000) == reference
    few = records[:400]  # a record per batch
    assert decisions(NearDedup(storage="disk"), few, 1) == decisions(NearDedup(storage="memory"), few, 400)
    assert list(tmp_path.iterdir()) == []  # spilled files are unlinked once open


def test_bounded_keep_best_names_missing_ids():
    f = NearDedup(keep="best", storage="disk")
    f.prepare(iter([make_record(ROUTER, id="a"), make_record(ROUTER_EDIT, id="b")]))  # read once
    assert run_filter(f, [make_record(ROUTER_EDIT, id="b")]) == [
        Drop("near-duplicate: of record a (estimated Jaccard 0.72)")
    ]
    with pytest.raises(RuntimeError, match="record new was not in the input given to prepare"):
        f.filter_batch([make_record(FRANCE, id="new")])


def _run_stage(out: Path, records: list, seeds: list, keep: str, storage: str, stop_after: int | None = None):
    """The local runner over `records`, as committed shards (UpstreamRecords as its input);
    with `stop_after`, a crash after that many shards, then a resumed run with fresh filters."""
    from distill.executor.local import StageContext, run_filters
    from distill.io.store import StageStore
    from distill.io.upstream import UpstreamRecords

    upstream = StageStore(out, "gen", "map", "digest")
    for b in range(0, len(records), 500):
        upstream.commit(records[b : b + 500], [], inputs=len(records[b : b + 500]))
    upstream.finish({})

    def run(limit: int | None) -> None:
        f = with_seeds(NearDedup(keep=keep, storage=storage), *seeds)
        store = StageStore(out, "clean", "filter", "digest")
        committed = store.commit

        def commit(*args, **kwargs):
            if limit is not None and store.next_index >= limit:
                raise KeyboardInterrupt("killed")
            return committed(*args, **kwargs)

        store.commit = commit
        ctx = StageContext(stage="clean", store=store, run_seed=0, notify=lambda *a: None)
        try:
            run_filters(ctx, [f], UpstreamRecords(upstream), 700)
        finally:
            f.close()
        store.finish({})

    if stop_after is not None:
        with pytest.raises(KeyboardInterrupt):
            run(stop_after)
    run(None)
    store = StageStore(out, "clean", "filter", "digest")
    dropped = {r.id: r.provenance.events[-1].reason for r in store.rejected()}
    return [r.id for r in store.kept()], dropped


@pytest.mark.parametrize("keep", ["earliest", "best"])
@pytest.mark.parametrize("n", [3000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_bounded_index_through_the_runner_and_a_resume(tmp_path, keep, n):
    records, seeds = bench_records(n, seed=3, scored=keep == "best")
    reference = _run_stage(tmp_path / "memory", records, seeds, keep, "memory")
    assert _run_stage(tmp_path / "disk", records, seeds, keep, "disk", stop_after=3) == reference
    assert len(reference[1]) > n // 12
