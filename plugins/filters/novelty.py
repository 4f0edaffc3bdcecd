"""Self-instruct's novelty check: drop a new instruction whose ROUGE-L with any seed or
earlier kept instruction is above a threshold (0.7 in the self-instruct paper).

Computing ROUGE-L against every instruction in the pool is quadratic; here it is computed
only for candidates from a MinHash LSH index, which is safe because ROUGE-L bounds Jaccard:
the tokens of the longest common subsequence (LCS) are common to both texts, so with m and n
tokens the multiset Jaccard is at least LCS / (m + n - LCS), and ROUGE-L F = 2 LCS / (m + n)
above t implies a multiset Jaccard above t / (2 - t) (0.54 for t = 0.7). The LSH bands are
chosen so that a pair at that bound is missed with probability below 0.1%, and candidates
whose MinHash estimate lies four standard errors below it get no LCS; pairs above the ROUGE-L
threshold usually sit far above the bound. The LCS itself is rapidfuzz's.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import Field

from distill.filter import KEEP, Decision, Drop, Filter
from distill.plugin import Options, PluginContext
from distill.records import Record
from distill_plugins.filters._sketch import Signer, SketchIndex, band_params, seed_label
from distill_plugins.filters._text import MissingField, TextField, field_text, is_generated

#: rouge_score's tokens (lower case, runs of letters and digits), extended from ASCII to any
#: script: for ASCII text the two agree.
_TOKEN = re.compile(r"[^\W_]+")
#: Probability of missing, among the LSH candidates, a pair right at the Jaccard bound.
_MISS = 1e-3
#: Code points available to spell token ids as one-character strings (no surrogates).
_CODES = 0x110000 - 0x800


def rouge_tokens(text: str) -> list[str]:
    """Tokens as rouge_score makes them: lower-cased, anything not a letter or digit a separator."""
    return _TOKEN.findall(text.lower())


def rouge_l(lcs: int, m: int, n: int) -> float:
    """ROUGE-L F-measure from the LCS length and the two token counts (0 if either is empty)."""
    return 2.0 * lcs / (m + n) if m and n else 0.0


class InstructionNovelty(Filter):
    """Drop an instruction whose ROUGE-L F with a seed or an earlier kept instruction exceeds
    `threshold`, as self-instruct does before adding a task to its pool."""

    name = "instruction-novelty"

    class Options(Options):
        field: TextField = Field("prompt", description="Compare the prompt (the instruction), the response, or both.")
        threshold: float = Field(
            0.7,
            gt=0.0,
            lt=1.0,
            description=(
                "Drop when the ROUGE-L F-measure with any seed or kept instruction is above this (self-instruct: 0.7)."
            ),
        )
        candidate_threshold: float | None = Field(
            None,
            gt=0.0,
            lt=1.0,
            description=(
                "Multiset Jaccard the LSH index is tuned to find. Default: threshold / (2 - threshold), "
                "the least Jaccard a pair above the ROUGE-L threshold can have (such a pair is missed "
                "with probability < 0.1%); higher is faster but may miss some."
            ),
        )
        num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations of the candidate index.")
        against_seeds: bool = Field(
            True,
            description=(
                "Also compare generated instructions with the seed set (self-instruct's pool starts with the "
                "seed tasks). Records that come from the seeds themselves are not compared with it."
            ),
        )
        hash_seed: int = Field(1, ge=0, description="Seed of the MinHash permutations (fixed for reproducibility).")

    def __init__(self, options=None, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self._engine: tuple[Any, Any, Any] | None = None
        self._ids: dict[str, str] = {}

    def _state(self) -> tuple[Any, Any, Any]:
        """Signer, index of kept instructions, index of seeds (labels: (name, token code))."""
        if self._engine is None:
            o = self.options
            bound = o.candidate_threshold or o.threshold / (2.0 - o.threshold)
            signer = Signer(o.num_perm, o.hash_seed, 1, multiset=True)
            params = band_params(o.num_perm, bound, _MISS)
            # candidates whose estimated Jaccard is 4 standard errors below the bound are not
            # worth an LCS (a pair at the bound falls there with probability ~3e-5)
            self._floor = bound - 4.0 * math.sqrt(bound * (1.0 - bound) / o.num_perm)
            self._engine = (signer, SketchIndex(signer, params=params), SketchIndex(signer, params=params))
        return self._engine

    def _code(self, tokens: list[str]) -> str:
        """The tokens as a string, one character per distinct token, for rapidfuzz's LCS."""
        ids = self._ids
        out = []
        for t in tokens:
            c = ids.get(t)
            if c is None:
                n = len(ids) % _CODES  # past 1.1M distinct tokens codes repeat: a tiny LCS overcount
                c = ids[t] = chr(n + 0x800 if n >= 0xD800 else n)
            out.append(c)
        return "".join(out)

    def _read(self, records: list[Record]) -> tuple[list[Any], list[str | None], list[MissingField | None]]:
        signer = self._state()[0]
        tokens: list[list[str]] = []
        codes: list[str | None] = []
        errors: list[MissingField | None] = []
        for r in records:
            try:
                toks = rouge_tokens(field_text(r, self.options.field))
            except MissingField as exc:
                codes.append(None)
                errors.append(exc)
                continue
            tokens.append(toks)
            codes.append(self._code(toks))
            errors.append(None)
        sigs = iter(signer.sign(tokens))
        return [None if c is None else next(sigs) for c in codes], codes, errors

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if not self.options.against_seeds or context.seeds is None:
            return
        seeds = context.seeds()
        if seeds:
            _, _, seed_index = self._state()
            sigs, codes, _ = self._read(seeds)
            for s, sig, code in zip(seeds, sigs, codes):
                if sig is not None:
                    seed_index.add(sig, (seed_label(s), code))

    def _most_similar(self, index: Any, sig: Any, sketch: Any, code: str) -> tuple[str, float] | None:
        """The candidate with the highest ROUGE-L above the threshold (ties: the earliest)."""
        from rapidfuzz.distance import LCSseq

        t = self.options.threshold
        m = len(code)
        best: tuple[str, float] | None = None
        for c in index.candidates(sketch, sig, self._floor):
            label, other = index.labels[c]
            n = len(other)
            if not m or not n or 2.0 * min(m, n) / (m + n) <= t:
                continue  # even a full match of the shorter one would not pass
            need = int(t * (m + n) / 2.0) + 1  # the least LCS with 2 LCS / (m + n) > t
            lcs = LCSseq.similarity(code, other, score_cutoff=need)
            f = rouge_l(lcs, m, n)
            if f > t and (best is None or f > best[1]):
                best = (label, f)
        return best

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        _, pool, seed_index = self._state()
        sigs, codes, errors = self._read(records)
        out: list[Decision] = []
        for r, sig, code, err in zip(records, sigs, codes, errors):
            if err is not None:
                out.append(err.drop())
                continue
            sketch = pool.sketch(sig)
            hit = self._most_similar(seed_index, sig, sketch, code) if len(seed_index) and is_generated(r) else None
            if hit is None:
                hit = self._most_similar(pool, sig, sketch, code)
                if hit is not None:
                    hit = (f"record {hit[0]}", hit[1])
            if hit is not None:
                out.append(Drop(f"too similar: ROUGE-L {hit[1]:.2f} with {hit[0]}"))
                continue
            pool.add(sig, (r.id, code), sketch)
            out.append(KEEP)
        return out

    def restore(self, kept: list[Record]) -> None:
        _, pool, _ = self._state()
        sigs, codes, _ = self._read(kept)
        for r, sig, code in zip(kept, sigs, codes):
            if sig is not None:
                pool.add(sig, (r.id, code))
