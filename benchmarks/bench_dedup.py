"""Dedup filters at scale, on instructions with planted near-duplicates (see dedup_data.py).

Targets: `near-dedup` (default options) filters 100k records in <= 60 s with peak RSS <= 2 GB,
precision and recall of the planted copies >= 0.95; time grows with an exponent <= 1.15 from
10k to 100k; it is at least as fast as a straightforward datasketch loop (a MinHash per record,
`update` per shingle, `lsh.query`, `lsh.insert`) on the same records. `instruction-novelty`
(ROUGE-L on LSH candidates) is compared with the all-pairs ROUGE-L loop of self-instruct on 5k
records: speed-up, and whether both drop the same records.

Bounded memory (issue 18): near-dedup also runs through the real local runner (`run_filters`)
over real stage shards (`UpstreamRecords`: records streamed, never listed) at 100k, 1M and
optionally 3M records (`--scale`): wall time of the filter stage (reading, deciding and
committing shards), peak RSS, precision/recall, and the time's scaling exponent. Targets: 1M
records in <= 1.5 GB peak RSS with precision and recall >= 0.99; at 100k the default
(bounded) path makes the same decisions as the in-memory datasketch path (`storage="memory"`).
The corpus is written to shards once, outside the timed process, and cached under
/tmp/distill-bench-dedup/ so repeats do not rewrite it.

Every measurement runs in a fresh subprocess (its peak RSS is its own); times cover the
filtering only, not building the corpus or importing numpy and datasketch (once a run).
Distill and the baseline alternate, so that a noisy neighbour on a shared machine slows both
alike; medians are reported.

    flock /tmp/distill-bench.lock python benchmarks/bench_dedup.py --out benchmarks/results/dedup.json \
        [--quick] [--scale 100000,1000000,3000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_data import Corpus, make_corpus, score

BATCH = 1000
#: Where the corpus, written to stage shards, is cached between runs.
SHARDS = Path("/tmp/distill-bench-dedup")
_KEPT_FOR = re.compile(r"of record r(\d+) ")


def _records(corpus: Corpus, scored: bool = False) -> list:
    from distill.records import Candidate, Message, Record

    out = []
    for i, text in enumerate(corpus.texts):
        r = Record(id=f"r{i}", messages=[Message(role="user", content=text)])
        if scored:  # a deterministic score per record, for keep: best
            r.candidates = [Candidate(content="answer", score=float((i * 7919) % 1000))]
        out.append(r)
    return out


def _kept_for(reasons: list[str | None]) -> list[int | None]:
    out: list[int | None] = []
    for reason in reasons:
        if reason is None:
            out.append(None)
        else:
            m = _KEPT_FOR.search(reason)
            if m is None:
                raise AssertionError(f"unexpected drop reason: {reason}")
            out.append(int(m.group(1)))
    return out


def near_distill(n: int, seed: int, keep: str = "earliest", storage: str = "auto") -> dict:
    from distill_plugins.filters.dedup import NearDedup

    corpus = make_corpus(n, seed=seed)
    records = _records(corpus, scored=keep == "best")
    started = time.perf_counter()
    f = NearDedup(keep=keep, storage=storage)
    if f.needs_whole_input():
        f.prepare(records)
    reasons: list[str | None] = []
    for b in range(0, n, BATCH):
        reasons.extend(getattr(d, "reason", None) for d in f.filter_batch(records[b : b + BATCH]))
    seconds = time.perf_counter() - started
    f.close()
    digest = hashlib.sha256(json.dumps(reasons).encode()).hexdigest()  # kept ids and reasons, in order
    return {
        "seconds": seconds,
        **score(corpus, _kept_for(reasons)),
        "options": f.options.model_dump(),
        "decisions_sha256": digest,
    }


def _shard_dir(n: int, seed: int) -> Path:
    return SHARDS / f"n{n}-seed{seed}"


def build_shards(n: int, seed: int) -> dict:
    """The corpus as one committed stage (`gen`, 1000 records a shard) and its clusters."""
    from distill.io.store import StageStore

    root = _shard_dir(n, seed)
    if (root / "clusters.json").exists():
        return {"cached": True}
    shutil.rmtree(root, ignore_errors=True)
    corpus = make_corpus(n, seed=seed)
    store = StageStore(root, "gen", "map", "bench")
    for b in range(0, n, BATCH):
        chunk = _records(Corpus(corpus.texts[b : b + BATCH], []))
        for k, r in enumerate(chunk):
            r.id = f"r{b + k}"
        store.commit(chunk, [], inputs=len(chunk))
    store.finish({})
    (root / "clusters.json").write_text(json.dumps(corpus.cluster))
    return {"cached": False}


def near_stream(n: int, seed: int, keep: str = "earliest") -> dict:
    """The filter stage through the local runner, its input streamed from the cached shards."""
    from distill.executor.local import StageContext, run_filters
    from distill.io.store import StageStore
    from distill.io.upstream import UpstreamRecords
    from distill_plugins.filters.dedup import NearDedup

    root = _shard_dir(n, seed)
    upstream = StageStore(root, "gen", "map", "bench")
    out = Path(tempfile.mkdtemp(prefix="distill-bench-near-", dir="/tmp"))
    try:
        store = StageStore(out, "clean", "filter", "bench")
        ctx = StageContext(stage="clean", store=store, run_seed=0, notify=lambda *a: None)
        f = NearDedup(keep=keep)
        started = time.perf_counter()
        run_filters(ctx, [f], UpstreamRecords(upstream), BATCH)
        seconds = time.perf_counter() - started
        f.close()
        reasons: list[str | None] = [None] * n
        for r in store.rejected():
            reasons[int(r.id[1:])] = r.provenance.events[-1].reason
    finally:
        shutil.rmtree(out, ignore_errors=True)
    clusters = json.loads((root / "clusters.json").read_text())
    return {"seconds": seconds, **score(Corpus([], clusters), _kept_for(reasons))}


def near_baseline(n: int, seed: int) -> dict:
    """What a user would write with datasketch alone (same text, shingles and threshold)."""
    from datasketch import MinHash, MinHashLSH

    from distill_plugins.filters._text import normalize
    from distill_plugins.filters.dedup import NearDedup

    o = NearDedup.Options()
    corpus = make_corpus(n, seed=seed)
    texts = [r.messages[0].content for r in _records(corpus)]
    k = o.shingle_size
    started = time.perf_counter()
    lsh = MinHashLSH(threshold=o.threshold, num_perm=o.num_perm)
    kept_for: list[int | None] = []
    for i, text in enumerate(texts):
        words = normalize(text).split()
        m = MinHash(num_perm=o.num_perm, seed=o.hash_seed)
        for j in range(max(len(words) - k + 1, 1)):
            m.update(" ".join(words[j : j + k]).encode())
        hits = lsh.query(m)
        if hits:
            kept_for.append(min(hits))
        else:
            lsh.insert(i, m)
            kept_for.append(None)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **score(corpus, kept_for)}


def novelty_lsh(n: int, seed: int) -> dict:
    from distill_plugins.filters.novelty import InstructionNovelty

    records = _records(make_corpus(n, seed=seed))
    started = time.perf_counter()
    f = InstructionNovelty()
    dropped = []
    for b in range(0, n, BATCH):
        for i, d in enumerate(f.filter_batch(records[b : b + BATCH]), b):
            if hasattr(d, "reason"):
                dropped.append(i)
    return {"seconds": time.perf_counter() - started, "dropped": dropped}


def novelty_all_pairs(n: int, seed: int) -> dict:
    """Self-instruct's loop: each instruction against every kept one (same tokens, same
    rapidfuzz LCS; only the LSH gate is missing)."""
    from rapidfuzz.distance import LCSseq

    from distill_plugins.filters.novelty import InstructionNovelty, rouge_tokens

    threshold = InstructionNovelty.Options().threshold
    texts = [r.messages[0].content for r in _records(make_corpus(n, seed=seed))]
    started = time.perf_counter()
    codes: dict[str, str] = {}
    kept: list[str] = []
    dropped = []
    similarity = LCSseq.similarity
    for i, text in enumerate(texts):
        a = "".join(codes.setdefault(t, chr(0x100 + len(codes))) for t in rouge_tokens(text))
        best = max((2.0 * similarity(a, b) / (len(a) + len(b)) for b in kept if a and b), default=0.0)
        if best > threshold:
            dropped.append(i)
        else:
            kept.append(a)
    return {"seconds": time.perf_counter() - started, "dropped": dropped}


TASKS = {
    "near": near_distill,
    "near-stream": near_stream,
    "build-shards": build_shards,
    "near-baseline": near_baseline,
    "novelty": novelty_lsh,
    "novelty-all-pairs": novelty_all_pairs,
}


def worker(spec: dict) -> None:
    # the filters import these on first use; a run imports them once, so they are not timed
    import datasketch  # noqa: F401
    import numpy  # noqa: F401
    import rapidfuzz  # noqa: F401

    result = TASKS[spec.pop("task")](**spec)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def run(task: str, **spec) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps({"task": task, **spec})], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"{task} {spec} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/dedup.json"))
    ap.add_argument("--quick", action="store_true", help="10x smaller and one repeat: a smoke test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", default="100000,1000000", help="record counts for the streamed runs through the runner")
    ap.add_argument(
        "--scale-only", action="store_true", help="run only the streamed runs; merge them into the --out file"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.scale_only:
        figures = json.loads(args.out.read_text())
        figures["near_dedup_streamed"] = streamed(args, lambda m: print(m, file=sys.stderr, flush=True))
        return finish(args, figures)
    small, large, novelty_n = (1_000, 10_000, 1_000) if args.quick else (10_000, 100_000, 5_000)
    repeats = 1 if args.quick else args.repeats
    load_before = os.getloadavg()
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    runs: dict[str, list[dict]] = {"small": [], "large": [], "baseline": [], "novelty": [], "all_pairs": []}
    for i in range(repeats):
        runs["small"].append(run("near", n=small, seed=args.seed))
        runs["large"].append(run("near", n=large, seed=args.seed))
        runs["baseline"].append(run("near-baseline", n=large, seed=args.seed))
        log(
            f"near-dedup round {i + 1}: {small} in {runs['small'][-1]['seconds']:.2f}s, {large} in "
            f"{runs['large'][-1]['seconds']:.2f}s, baseline {runs['baseline'][-1]['seconds']:.2f}s"
        )
    best = run("near", n=large, seed=args.seed, keep="best")
    log(f"keep: best {best['seconds']:.2f}s")
    memory = run("near", n=large, seed=args.seed, storage="memory")
    memory_best = run("near", n=large, seed=args.seed, keep="best", storage="memory")
    log(f"in-memory (datasketch) path: {memory['seconds']:.2f}s, keep: best {memory_best['seconds']:.2f}s")
    for i in range(repeats):
        runs["novelty"].append(run("novelty", n=novelty_n, seed=args.seed + 1))
        runs["all_pairs"].append(run("novelty-all-pairs", n=novelty_n, seed=args.seed + 1))
        log(
            f"novelty round {i + 1}: lsh {runs['novelty'][-1]['seconds']:.2f}s, "
            f"all pairs {runs['all_pairs'][-1]['seconds']:.2f}s"
        )

    t_small = median([r["seconds"] for r in runs["small"]])
    t_large = median([r["seconds"] for r in runs["large"]])
    t_base = median([r["seconds"] for r in runs["baseline"]])
    ratios = [b["seconds"] / d["seconds"] for b, d in zip(runs["baseline"], runs["large"])]
    exponent = math.log(t_large / t_small) / math.log(large / small)
    large0, base0 = runs["large"][0], runs["baseline"][0]
    lsh_drops, naive_drops = set(runs["novelty"][0]["dropped"]), set(runs["all_pairs"][0]["dropped"])
    t_nov = median([r["seconds"] for r in runs["novelty"]])
    t_all = median([r["seconds"] for r in runs["all_pairs"]])
    quality = ("dropped", "expected_drops", "true_positives", "precision", "recall")
    figures = {
        "benchmark": "dedup filters on instructions with planted near-duplicates",
        "quick": args.quick,
        "platform": {
            "machine": platform.machine(),
            "processor": platform.processor() or None,
            "system": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "packages": {p: metadata.version(p) for p in ("datasketch", "numpy", "rapidfuzz")},
        },
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "corpus": {"planted_copy_rate": 0.1, "sibling_rate": 0.1, "seed": args.seed, "batch_size": BATCH},
        "near_dedup": {
            "options": large0["options"],
            "repeats": repeats,
            f"seconds_{small}": t_small,
            f"seconds_{large}": t_large,
            "runs_seconds": {
                str(small): [round(r["seconds"], 3) for r in runs["small"]],
                str(large): [round(r["seconds"], 3) for r in runs["large"]],
            },
            "scaling_exponent": round(exponent, 3),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["large"]),
            **{k: large0[k] for k in quality},
            "keep_best": {
                "seconds": round(best["seconds"], 3),
                "peak_rss_mb": best["peak_rss_mb"],
                **{k: best[k] for k in quality},
            },
            "memory_path": {
                "what": "storage='memory': datasketch MinHashLSH, signatures and keep: best records in RAM",
                "seconds": round(memory["seconds"], 3),
                "peak_rss_mb": memory["peak_rss_mb"],
                "keep_best_seconds": round(memory_best["seconds"], 3),
                "keep_best_peak_rss_mb": memory_best["peak_rss_mb"],
            },
            "same_decisions_as_memory_path": {
                "earliest": all(r["decisions_sha256"] == memory["decisions_sha256"] for r in runs["large"]),
                "best": best["decisions_sha256"] == memory_best["decisions_sha256"],
            },
        },
        "near_dedup_streamed": streamed(args, log),
        "baseline_datasketch_loop": {
            "seconds_median": t_base,
            "runs_seconds": [round(r["seconds"], 3) for r in runs["baseline"]],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["baseline"]),
            **{k: base0[k] for k in quality},
            "ratio_baseline_over_distill_per_pair": [round(r, 3) for r in ratios],
            "ratio_median": round(statistics.median(ratios), 3),
        },
        "novelty": {
            "records": novelty_n,
            "options": {"threshold": 0.7},
            "lsh_seconds_median": t_nov,
            "all_pairs_seconds_median": t_all,
            "speedup": round(t_all / t_nov, 2),
            "dropped_lsh": len(lsh_drops),
            "dropped_all_pairs": len(naive_drops),
            "same_drops": lsh_drops == naive_drops,
            "agreement": round(1 - len(lsh_drops ^ naive_drops) / novelty_n, 5),
        },
    }
    finish(args, figures)


def streamed(args: argparse.Namespace, log) -> dict:
    """Near-dedup through the runner over cached shards, per record count (see the docstring)."""
    sizes = [int(x) for x in args.scale.split(",") if x]
    if args.quick:
        sizes = [n // 10 for n in sizes]
    out: dict[str, dict] = {}
    for n in sizes:
        built = run("build-shards", n=n, seed=args.seed)
        log(f"shards of {n} records {'cached' if built['cached'] else 'written'}")
        r = run("near-stream", n=n, seed=args.seed)
        out[str(n)] = {k: (round(v, 3) if k == "seconds" else v) for k, v in r.items()}
        log(f"streamed {n}: {r['seconds']:.1f}s, {r['peak_rss_mb']:.0f} MB, P {r['precision']}, R {r['recall']}")
    exponent = None
    if len(sizes) > 1:  # least squares of log time on log records
        xs = [math.log(n) for n in sizes]
        ys = [math.log(out[str(n)]["seconds"]) for n in sizes]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        exponent = round(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs), 3)
    return {
        "what": "run_filters over UpstreamRecords of real StageStore shards, near-dedup default options, "
        "batch 1000; seconds cover reading, deciding and committing; one fresh process per size",
        "records": out,
        "scaling_exponent": exponent,
    }


def finish(args: argparse.Namespace, figures: dict) -> None:
    nd, bl = figures["near_dedup"], figures["baseline_datasketch_loop"]
    large = max(int(k) for k in nd["runs_seconds"])
    st = figures.get("near_dedup_streamed", {}).get("records", {})
    million = st.get(str(100_000 if args.quick else 1_000_000))
    figures["targets"] = {
        f"seconds_{large} <= 60": nd[f"seconds_{large}"] <= 60,
        "peak_rss <= 2048 MB": nd["peak_rss_mb"] <= 2048,
        "precision >= 0.95": nd["precision"] >= 0.95,
        "recall >= 0.95": nd["recall"] >= 0.95,
        "scaling_exponent <= 1.15": nd["scaling_exponent"] <= 1.15,
        "baseline/distill >= 1.0": bl["ratio_median"] >= 1.0,
        "novelty same drops as all pairs": figures["novelty"]["same_drops"],
        f"{large} same decisions as the in-memory path": all(nd.get("same_decisions_as_memory_path", {}).values()),
    }
    if million is not None:
        figures["targets"].update(
            {
                "streamed 1M peak_rss <= 1536 MB": million["peak_rss_mb"] <= 1536,
                "streamed 1M precision >= 0.99": million["precision"] >= 0.99,
                "streamed 1M recall >= 0.99": million["recall"] >= 0.99,
            }
        )
    figures["met"] = all(figures["targets"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
