"""Deduplication filters: exact (normalised text) and, from datasketch, MinHash LSH
near-duplicates and the self-instruct ROUGE-L novelty check (in `novelty.py`).

Dedup state spans the whole stage: a record is compared with every record kept before it
(in earlier batches too) and with the seed set, and on resume the state is rebuilt from the
committed shards through `restore`. Only generated records (`is_generated`) are compared with
the seed set: a record that *is* a seed would always match itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distill.filter import KEEP, Decision, DistributedDedup, Drop, ExactKeys, Filter, MinHashBands
from distill.hookspecs import hookimpl
from distill.plugin import Options, PluginContext
from distill.records import Record
from distill_plugins.filters._sketch import Signer, SketchIndex, band_params, seed_label
from distill_plugins.filters._text import MissingField, TextField, field_text, is_generated, normalize, text_or_drop
from distill_plugins.filters.novelty import InstructionNovelty

#: Probability that the LSH misses a pair whose Jaccard is exactly the threshold. Candidates
#: are checked against the threshold afterwards, so erring towards more of them costs time,
#: not precision; datasketch's own optimum (equal weights) misses about half such pairs.
_LSH_MISS = 0.15
#: How a near-duplicate's drop reason reads; `of` names the seed or `record <id>`.
NEAR_REASON = "near-duplicate: of {of} (estimated Jaccard {jaccard:.2f})"
#: Kept entries whose signatures the bounded index holds in RAM before it writes them to a file
#: (128 permutations: 64 MB); below it, nothing touches the disk.
SPILL_AFTER = 1 << 17
#: Records signed and indexed at once on resume.
RESTORE_CHUNK = 4096
#: Where near-dedup keeps its index (see `NearDedup.__init__`).
Storage = Literal["auto", "memory", "disk"]
_AGAINST_SEEDS = (
    "Also drop generated records that duplicate a seed record (the run's seed set, "
    "read once at setup). Records that come from the seeds themselves are never compared with it."
)


def seed_texts(context: PluginContext, field: TextField) -> list[tuple[Record, str]]:
    """The run's seed records that have `field`, with its text (seeds without it, a seed
    prompt when the field is the response, cannot be duplicated in that field)."""
    if context.seeds is None:
        return []
    out = []
    for s in context.seeds():
        try:
            out.append((s, field_text(s, field)))
        except MissingField:
            continue
    return out


def normalized_digest(text: str) -> str:
    """Exact dedup's key: equal for texts that differ only in what `normalize` folds away."""
    return hashlib.sha1(normalize(text).encode()).hexdigest()


def shingle_words(text: str) -> list[str]:
    """The tokens near dedup signs (the signer shingles them)."""
    return normalize(text).split()


def candidate_score(record: Record) -> float | None:
    """A record's score for `keep: best`: its best-scored candidate's (None when unranked)."""
    scores = [c.score for c in record.candidates if c.score is not None]
    return max(scores) if scores else None


def best_first(records: Sequence[Record]) -> list[int]:
    """The order `keep: best` decides in: highest candidate score first, unscored last, ties
    to the earliest."""
    scores = [candidate_score(r) for r in records]
    return sorted(range(len(records)), key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))


class ExactDedup(Filter):
    """Drop records whose normalised text (case, whitespace, punctuation) was already kept."""

    name = "exact-dedup"

    class Options(Options):
        field: TextField = Field("prompt", description="Dedupe on the prompt, the response, or both.")
        against_seeds: bool = Field(True, description=_AGAINST_SEEDS)

    def __init__(self, options=None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self.seen: dict[str, str] = {}
        self.seed_keys: dict[str, str] = {}

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if self.options.against_seeds:
            for seed, text in seed_texts(context, self.options.field):
                self.seed_keys.setdefault(self._digest(text), seed_label(seed))

    def _digest(self, text: str) -> str:
        return normalized_digest(text)

    def key(self, record: Record) -> str:
        return self._digest(field_text(record, self.options.field))

    def _reason(self) -> str:
        return f"duplicate: same normalised {self.options.field} as {{of}}"

    def distributed(self) -> DistributedDedup:
        return DistributedDedup(
            grouping=ExactKeys(key=normalized_digest, seeds=dict(self.seed_keys)),
            read=partial(text_or_drop, field=self.options.field),
            against_seeds=is_generated,
            reason=self._reason(),
        )

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        out: list[Decision] = []
        reason = self._reason()
        for r in records:
            try:
                k = self.key(r)
            except MissingField as exc:
                out.append(exc.drop())
                continue
            seed = self.seed_keys.get(k) if is_generated(r) else None
            first = self.seen.get(k)
            if seed is not None:
                out.append(Drop(reason.format(of=seed)))
            elif first is None:
                self.seen[k] = r.id
                out.append(KEEP)
            else:
                out.append(Drop(reason.format(of=f"record {first}")))
        return out

    def restore(self, kept: list[Record]) -> None:
        for r in kept:
            try:
                self.seen.setdefault(self.key(r), r.id)
            except MissingField:
                continue


class NearDedup(Filter):
    """Drop records whose MinHash-estimated Jaccard similarity (of word n-gram shingles of the
    normalised text) with a kept record or a seed is at least `threshold`.

    Candidates come from a datasketch MinHash LSH index, so each record is compared with the
    few that share a band, never with all. With `keep: earliest` (the default) records are
    decided batch by batch, each against those kept before it. With `keep: best` a duplicate
    cluster keeps its best-scored record wherever it comes in the stage, so the whole input is
    needed first (`prepare`); the filter must then be its stage's first.
    """

    name = "near-dedup"

    class Options(Options):
        field: TextField = Field("prompt", description="Compare the prompt, the response, or both.")
        shingle_size: int = Field(
            2,
            ge=1,
            le=8,
            description=(
                "Words per shingle. Larger n-grams make word order matter more and a one-word edit "
                "cost more similarity; short instructions want small ones."
            ),
        )
        num_perm: int = Field(
            128,
            ge=16,
            le=1024,
            description=(
                "MinHash permutations: more estimate Jaccard more precisely (error about "
                "sqrt(J(1-J)/num_perm)) and cost proportionally more time and memory."
            ),
        )
        threshold: float = Field(
            0.6,
            gt=0.0,
            le=1.0,
            description=("Estimated Jaccard similarity at or above which a record is a near-duplicate."),
        )
        keep: Literal["earliest", "best"] = Field(
            "earliest",
            description=(
                "Which record of a duplicate cluster survives: the first in stage order, or the one with "
                "the highest candidate score (unscored lowest, ties to the earliest; needs the whole "
                "stage input, so the filter must be the stage's first)."
            ),
        )
        against_seeds: bool = Field(True, description=_AGAINST_SEEDS)
        hash_seed: int = Field(1, ge=0, description="Seed of the MinHash permutations (fixed for reproducibility).")

    def __init__(self, options=None, *, storage: Storage = "auto", spill_after: int | None = None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        if storage not in ("auto", "memory", "disk"):
            raise ValueError(f"storage must be auto, memory or disk, not {storage!r}")
        #: "memory": datasketch's MinHashLSH and every record of `prepare` in RAM (the original
        #: path, kept as the reference); "disk": the bounded index with signatures in a file
        #: from the first entry; "auto": the bounded index, signatures in RAM up to
        #: `spill_after` entries, then in a file.
        self.storage = storage
        self.spill_after = 0 if storage == "disk" else (SPILL_AFTER if spill_after is None else spill_after)
        self._engine: tuple[Any, Any, Any] | None = None
        self._prepared: Any = None

    def _state(self) -> tuple[Any, Any, Any]:
        """Signer, index of kept records, index of seeds; made on first use (numpy and
        datasketch load then, not at plugin discovery)."""
        if self._engine is None:
            o = self.options
            self._signer = Signer(o.num_perm, o.hash_seed, o.shingle_size)
            self._params = band_params(o.num_perm, o.threshold, _LSH_MISS)
            self._engine = (self._signer, self._new_index(), self._new_index(seeds=True))
        return self._engine

    def _new_index(self, seeds: bool = False) -> Any:
        if self.storage == "memory":
            return SketchIndex(self._signer, params=self._params)
        from distill_plugins.filters._band_index import BandIndex

        bands, rows = self._params
        spill = 1 << 62 if seeds else self.spill_after  # the seed set is read into RAM anyway
        return BandIndex(self.options.num_perm, bands, rows, spill, self._folder())

    def _folder(self) -> str | None:
        """Where spilled signatures go (files unlinked once open): the plugin's state folder
        when the run gave it one that exists, else the system's temporary folder."""
        state = getattr(getattr(self, "context", None), "state_dir", None)
        return str(state) if state is not None and Path(state).is_dir() else None

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if self.options.against_seeds:
            seeds = seed_texts(context, self.options.field)
            if seeds:
                signer, _, seed_index = self._state()
                sigs = signer.sign([shingle_words(text) for _, text in seeds])
                if isinstance(seed_index, SketchIndex):
                    for (seed, _), sig in zip(seeds, sigs):
                        seed_index.add(sig, seed_label(seed))
                else:
                    seed_index.add(sigs, [seed_label(seed) for seed, _ in seeds])

    def needs_whole_input(self) -> bool:
        return self.options.keep == "best"

    def _sign(self, records: Sequence[Record]) -> tuple[list[Any], list[MissingField | None]]:
        """One signature per record (None where the field is missing) and the errors."""
        signer = self._state()[0]
        texts: list[list[str]] = []
        errors: list[MissingField | None] = []
        for r in records:
            try:
                texts.append(shingle_words(field_text(r, self.options.field)))
                errors.append(None)
            except MissingField as exc:
                errors.append(exc)
        sigs = iter(signer.sign(texts))
        return [None if e else next(sigs) for e in errors], errors

    def _decide(self, records: list[Record], order: list[int] | None = None) -> list[Decision]:
        """The datasketch path: decide records one by one in `order` (default: as given), each
        against the seeds and the records kept so far, and index those kept."""
        _, index, seed_index = self._state()
        sigs, errors = self._sign(records)
        t = self.options.threshold
        out: list[Decision] = [KEEP] * len(records)
        for i in order if order is not None else range(len(records)):
            r, sig, err = records[i], sigs[i], errors[i]
            if err is not None:
                out[i] = err.drop()
                continue
            sketch = index.sketch(sig)
            hit = seed_index.best(sig, sketch, t) if len(seed_index) and is_generated(r) else None
            if hit is not None:
                out[i] = Drop(NEAR_REASON.format(of=seed_index.labels[hit[0]], jaccard=hit[1]))
                continue
            hit = index.best(sig, sketch, t)
            if hit is not None:
                out[i] = Drop(NEAR_REASON.format(of=f"record {index.labels[hit[0]]}", jaccard=hit[1]))
                continue
            index.add(sig, r.id, sketch)
        return out

    def _decide_bounded(self, records: list[Record]) -> list[Decision]:
        """The bounded path (`_near.decide`): the whole batch probed at once."""
        import numpy as np

        from distill_plugins.filters._near import ENTRY, KEPT, SEED, decide

        _, index, seed_index = self._state()
        sigs, errors = self._sign(records)
        live = [i for i, e in enumerate(errors) if e is None]
        batch = np.array([sigs[i] for i in live], dtype=np.uint32).reshape(len(live), self.options.num_perm)
        gen = np.array([is_generated(records[i]) for i in live], dtype=bool)
        d = decide(index, seed_index, batch, gen, self.options.threshold)
        kept = d.kind == KEPT
        index.add(batch[kept], [records[live[k]].id for k in np.flatnonzero(kept).tolist()])
        out: list[Decision] = [e.drop() if e is not None else KEEP for e in errors]
        for k, i in enumerate(live):
            kind = d.kind[k]
            if kind == SEED:
                out[i] = Drop(NEAR_REASON.format(of=seed_index.labels[int(d.of[k])], jaccard=float(d.est[k])))
            elif kind == ENTRY:
                out[i] = Drop(NEAR_REASON.format(of=f"record {index.labels[int(d.of[k])]}", jaccard=float(d.est[k])))
        return out

    def distributed(self) -> DistributedDedup:
        o = self.options
        _, _, seeds = self._state()
        bands, rows = self._params
        if isinstance(seeds, SketchIndex):
            seed_sigs, seed_labels = seeds.sigs[: len(seeds)], list(seeds.labels)
        else:
            seed_sigs, seed_labels = seeds.sigs.all(), seeds.labels.tolist()
        grouping = MinHashBands(
            tokens=shingle_words,
            signer=partial(Signer, o.num_perm, o.hash_seed, o.shingle_size),
            num_perm=o.num_perm,
            bands=bands,
            rows=rows,
            threshold=o.threshold,
            seed_signatures=seed_sigs,
            seed_labels=seed_labels,
        )
        return DistributedDedup(
            grouping=grouping,
            read=partial(text_or_drop, field=o.field),
            against_seeds=is_generated,
            reason=NEAR_REASON,
            order=best_first if o.keep == "best" else None,
        )

    def prepare(self, records: Sequence[Record]) -> None:
        """Decide the whole input in score order. The bounded path reads `records` once, in
        order (any iterable will do), and keeps arrays, not records or Decisions."""
        signer, index, seed_index = self._state()
        if self.storage == "memory":
            records = list(records)
            self._engine = (signer, self._new_index(), seed_index)  # decide afresh
            decisions = self._decide(records, best_first(records))
            self._prepared = {r.id: d for r, d in zip(records, decisions)}
            return
        from distill_plugins.filters._near import prepare_best

        index.close()
        self._prepared, index = prepare_best(
            records,
            self._sign,
            candidate_score,
            is_generated,
            self._new_index,
            seed_index,
            self.options.num_perm,
            self.options.threshold,
            self.spill_after,
            self._folder(),
        )
        index.table = None  # every record is decided: only the labels are read from now on
        self._engine = (signer, index, seed_index)

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        if self._prepared is None:
            if self.options.keep == "best":
                raise RuntimeError("near-dedup with keep: best decides in prepare(), which was not called")
            return self._decide(records) if self.storage == "memory" else self._decide_bounded(records)
        if isinstance(self._prepared, dict):
            missing = [r.id for r in records if r.id not in self._prepared]
            if missing:
                raise RuntimeError(f"record {missing[0]} was not in the input given to prepare()")
            return [self._prepared[r.id] for r in records]
        return self._prepared_decisions(records)

    def _prepared_decisions(self, records: list[Record]) -> list[Decision]:
        from distill_plugins.filters._near import ENTRY, SEED

        p = self._prepared
        _, index, seed_index = self._state()
        out: list[Decision] = []
        for r, at in zip(records, p.positions([r.id for r in records])):
            if at is None:
                raise RuntimeError(f"record {r.id} was not in the input given to prepare()")
            kind, jaccard = int(p.kind[at]), int(p.equal[at]) / self.options.num_perm
            if kind == SEED:
                out.append(Drop(NEAR_REASON.format(of=seed_index.labels[int(p.of[at])], jaccard=jaccard)))
            elif kind == ENTRY:
                out.append(Drop(NEAR_REASON.format(of=f"record {index.labels[int(p.of[at])]}", jaccard=jaccard)))
            elif at in p.missing:
                out.append(Drop(p.missing[at]))
            else:
                out.append(KEEP)
        return out

    def restore(self, kept: Iterable[Record]) -> None:
        """Index the records kept in committed shards, read once in order a chunk at a time."""
        if self.options.keep == "best":
            return  # prepare() has decided every record again
        _, index, _ = self._state()
        chunk: list[Record] = []
        for r in kept:
            chunk.append(r)
            if len(chunk) == RESTORE_CHUNK:
                self._index_kept(index, chunk)
                chunk = []
        self._index_kept(index, chunk)

    def _index_kept(self, index: Any, records: list[Record]) -> None:
        sigs, _ = self._sign(records)
        present = [(r, sig) for r, sig in zip(records, sigs) if sig is not None]
        if isinstance(index, SketchIndex):
            for r, sig in present:
                index.add(sig, r.id)
        elif present:
            import numpy as np

            index.add(np.stack([sig for _, sig in present]), [r.id for r, _ in present])

    def close(self) -> None:
        """Remove the spilled signatures (their files are already unlinked: this frees them)."""
        if self._engine is not None:
            for index in self._engine[1:]:
                if not isinstance(index, SketchIndex):
                    index.close()


@hookimpl
def register_filters(register) -> None:
    register(ExactDedup)
    register(NearDedup)
    register(InstructionNovelty)
