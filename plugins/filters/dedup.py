"""Deduplication filters: exact (normalised text) and, from datasketch, MinHash LSH
near-duplicates and the self-instruct ROUGE-L novelty check (in `novelty.py`).

Dedup state spans the whole stage: a record is compared with every record kept before it
(in earlier batches too) and with the seed set, and on resume the state is rebuilt from the
committed shards through `restore`. Only generated records (`is_generated`) are compared with
the seed set: a record that *is* a seed would always match itself.
"""

from __future__ import annotations

import hashlib
from functools import partial
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


def best_first(records: list[Record]) -> list[int]:
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

    def __init__(self, options=None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self._engine: tuple[Any, Any, Any] | None = None
        self._prepared: dict[str, Decision] | None = None

    def _state(self) -> tuple[Any, Any, Any]:
        """Signer, index of kept records, index of seeds; made on first use (numpy and
        datasketch load then, not at plugin discovery)."""
        if self._engine is None:
            o = self.options
            signer = Signer(o.num_perm, o.hash_seed, o.shingle_size)
            self._params = band_params(o.num_perm, o.threshold, _LSH_MISS)
            self._engine = (signer, SketchIndex(signer, params=self._params), SketchIndex(signer, params=self._params))
        return self._engine

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if self.options.against_seeds:
            seeds = seed_texts(context, self.options.field)
            if seeds:
                signer, _, seed_index = self._state()
                sigs = signer.sign([shingle_words(text) for _, text in seeds])
                for (seed, _), sig in zip(seeds, sigs):
                    seed_index.add(sig, seed_label(seed))

    def needs_whole_input(self) -> bool:
        return self.options.keep == "best"

    def _sign(self, records: list[Record]) -> tuple[list[Any], list[MissingField | None]]:
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
        """Decide records one by one in `order` (default: as given), each against the seeds
        and the records kept so far, and index those kept."""
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

    def distributed(self) -> DistributedDedup:
        o = self.options
        _, _, seeds = self._state()
        bands, rows = self._params
        grouping = MinHashBands(
            tokens=shingle_words,
            signer=partial(Signer, o.num_perm, o.hash_seed, o.shingle_size),
            num_perm=o.num_perm,
            bands=bands,
            rows=rows,
            threshold=o.threshold,
            seed_signatures=seeds.sigs[: len(seeds)],
            seed_labels=list(seeds.labels),
        )
        return DistributedDedup(
            grouping=grouping,
            read=partial(text_or_drop, field=o.field),
            against_seeds=is_generated,
            reason=NEAR_REASON,
            order=best_first if o.keep == "best" else None,
        )

    def prepare(self, records: list[Record]) -> None:
        signer, _, seed_index = self._state()
        self._engine = (signer, SketchIndex(signer, params=self._params), seed_index)  # decide afresh
        decisions = self._decide(records, best_first(records))
        self._prepared = {r.id: d for r, d in zip(records, decisions)}

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        if self._prepared is None:
            if self.options.keep == "best":
                raise RuntimeError("near-dedup with keep: best decides in prepare(), which was not called")
            return self._decide(records)
        missing = [r.id for r in records if r.id not in self._prepared]
        if missing:
            raise RuntimeError(f"record {missing[0]} was not in the input given to prepare()")
        return [self._prepared[r.id] for r in records]

    def restore(self, kept: list[Record]) -> None:
        if self.options.keep == "best":
            return  # prepare() has decided every record again
        _, index, _ = self._state()
        sigs, _ = self._sign(kept)
        for r, sig in zip(kept, sigs):
            if sig is not None:
                index.add(sig, r.id)


@hookimpl
def register_filters(register) -> None:
    register(ExactDedup)
    register(NearDedup)
    register(InstructionNovelty)
