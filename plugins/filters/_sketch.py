"""MinHash signatures and an LSH index over them, shared by the near-duplicate and the
novelty filters.

Signatures are datasketch's (`affine32` scheme, its permutations for a fixed seed), but
computed for a whole batch at once with numpy: hashing every shingle with SHA-1 and calling
`MinHash.update` per shingle costs microseconds each, which is most of the time a plain
datasketch loop spends on 100k records. Each word is hashed once (blake2b, cached), a shingle's
hash combines its words' hashes, and the permutations and minima run over the batch as one
array. A test checks that the result equals `datasketch.MinHash.update_batch` fed the same
shingle hashes. The index itself is datasketch's `MinHashLSH`.

Only stdlib at module level: numpy and datasketch are imported when a signer or an index is
made, so discovering the plugins stays light.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from distill.records import Record

#: Per-position multipliers (odd 64-bit constants) that combine word hashes into a shingle
#: hash, so "a b" and "b a" differ.
_MIX = (
    0x9E3779B97F4A7C15,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0xD6E8FEB86659FD93,
    0xFF51AFD7ED558CCD,
    0xC4CEB9FE1A85EC53,
    0x94D049BB133111EB,
    0xBF58476D1CE4E5B9,
)
#: Bound on the word-hash cache; it is cleared (not evicted) when full, which keeps the
#: lookups a plain dict's.
_CACHE_WORDS = 1 << 20
#: Shingles per numpy block: (shingles x num_perm) uint32 values stay around 16 MB.
_BLOCK = 1 << 15


def word_hash(word: str) -> int:
    """A 64-bit hash of a word that is the same in every process (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def seed_label(record: Record) -> str:
    """How a drop reason names a seed: its dataset and row, as loaded."""
    if record.provenance.sources:
        src = record.provenance.sources[0]
        return f"seed {src.dataset!r}" + (f" row {src.row}" if src.row is not None else "")
    return f"seed record {record.id}"


class Signer:
    """Turns token lists into MinHash signatures (one uint32 row of `num_perm` per list).

    `shingle_size` consecutive tokens make a shingle; a text shorter than that is one
    shingle, and an empty one is a single empty shingle (so two empty texts match, as exact
    dedup would say). With `multiset`, the k-th occurrence of a token is its own element, so
    the Jaccard estimated is the multiset one (sum of minima over sum of maxima).
    """

    def __init__(self, num_perm: int, seed: int, shingle_size: int = 1, multiset: bool = False) -> None:
        import numpy as np
        from datasketch import MinHash

        if not 1 <= shingle_size <= len(_MIX):
            raise ValueError(f"shingle_size must be between 1 and {len(_MIX)}")
        self.np = np
        self.num_perm = num_perm
        self.seed = seed
        self.shingle_size = shingle_size
        self.multiset = multiset
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        self.a = np.asarray(a, dtype=np.uint32)[None, :]
        self.b = np.asarray(b, dtype=np.uint32)[None, :]
        self.mix = np.array(_MIX[:shingle_size], dtype=np.uint64)
        self._words: dict[str, int] = {}

    def _word_hashes(self, tokens: Sequence[str]) -> list[int]:
        cache = self._words
        if len(cache) > _CACHE_WORDS:
            cache.clear()
        out = []
        for t in tokens:
            h = cache.get(t)
            if h is None:
                h = cache[t] = word_hash(t)
            out.append(h)
        if self.multiset:
            seen: dict[int, int] = {}
            for i, h in enumerate(out):
                k = seen[h] = seen.get(h, 0) + 1
                if k > 1:
                    out[i] = (h + k * _MIX[1]) & 0xFFFFFFFFFFFFFFFF
        return out

    def shingle_hashes(self, token_lists: Sequence[Sequence[str]]) -> tuple[Any, Any]:
        """32-bit shingle hashes of every list, concatenated, and the index where each list's
        shingles start (every list has at least one)."""
        np = self.np
        k = self.shingle_size
        flat: list[int] = []
        starts: list[int] = []
        counts: list[int] = []
        pad = [0] * (k - 1)
        for tokens in token_lists:
            hs = self._word_hashes(tokens) or [0]
            starts.append(len(flat))
            counts.append(max(len(hs) - k + 1, 1))
            flat.extend(hs)
            flat.extend(pad)
        words = np.array(flat, dtype=np.uint64)
        width = len(words) - k + 1
        with np.errstate(over="ignore"):
            h = words[:width] * self.mix[0]
            for i in range(1, k):
                h += words[i : i + width] * self.mix[i]
        count = np.array(counts, dtype=np.int64)
        offsets = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(count[:-1], out=offsets[1:])
        positions = np.repeat(np.array(starts, dtype=np.int64) - offsets, count) + np.arange(int(count.sum()))
        h = h[positions]
        return ((h >> np.uint64(32)) ^ h).astype(np.uint32), offsets

    def sign(self, token_lists: Sequence[Sequence[str]]) -> Any:
        """Signatures, shape (len(token_lists), num_perm), dtype uint32."""
        np = self.np
        out = np.empty((len(token_lists), self.num_perm), dtype=np.uint32)
        if not token_lists:
            return out
        hashes, offsets = self.shingle_hashes(token_lists)
        hashes = _fmix32(np, hashes)
        ends = np.append(offsets[1:], len(hashes))
        row = 0
        while row < len(token_lists):
            # as many whole lists as fit in one block (at least one)
            last = max(int(np.searchsorted(ends, offsets[row] + _BLOCK, side="right")), row + 1)
            lo, hi = int(offsets[row]), int(ends[last - 1])
            permuted = hashes[lo:hi, None] * self.a + self.b
            out[row:last] = np.minimum.reduceat(permuted, offsets[row:last] - lo, axis=0)
            row = last
        return out


def _fmix32(np: Any, h: Any) -> Any:
    """MurmurHash3's finalizer, as datasketch applies it before its affine permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def band_params(num_perm: int, threshold: float, miss: float) -> tuple[int, int]:
    """LSH bands and rows for which a pair of Jaccard `threshold` is missed with probability at
    most `miss`, with the longest bands that achieve it (the fewest spurious candidates)."""
    for r in range(num_perm // 2, 0, -1):
        b = num_perm // r
        if b >= 2 and (1 - threshold**r) ** b <= miss:
            return b, r
    return num_perm, 1


class SketchIndex:
    """A datasketch `MinHashLSH` over signatures, which also keeps the signatures (to estimate
    Jaccard for the drop reason) and a label per entry (what the reason names)."""

    def __init__(
        self,
        signer: Signer,
        *,
        threshold: float = 0.5,
        weights: tuple[float, float] = (0.5, 0.5),
        params: tuple[int, int] | None = None,
    ) -> None:
        from datasketch import MinHashLSH

        np = signer.np
        self.np = np
        self.seed = signer.seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=signer.num_perm, weights=weights, params=params)
        self.sigs = np.empty((256, signer.num_perm), dtype=np.uint32)
        self.labels: list[Any] = []

    def __len__(self) -> int:
        return len(self.labels)

    def sketch(self, sig: Any) -> Any:
        """The datasketch object for a signature, made once and used for query and insert."""
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.seed, hashvalues=sig, scheme="affine32")

    def add(self, sig: Any, label: Any, sketch: Any = None) -> None:
        n = len(self.labels)
        if n == len(self.sigs):
            self.sigs = self.np.concatenate([self.sigs, self.np.empty_like(self.sigs)])
        self.sigs[n] = sig
        self.labels.append(label)
        self.lsh.insert(n, sketch if sketch is not None else self.sketch(sig), check_duplication=False)

    def candidates(self, sketch: Any, sig: Any = None, floor: float = 0.0) -> list[int]:
        """Entries sharing a band with the sketch, in the order they were added; with `sig`,
        only those whose estimated Jaccard with it is at least `floor`."""
        cands = sorted(self.lsh.query(sketch)) if self.labels else []
        if cands and sig is not None and floor > 0.0:
            est = self.estimate(cands, sig)
            cands = [c for c, e in zip(cands, est.tolist()) if e >= floor]
        return cands

    def estimate(self, entries: list[int], sig: Any) -> Any:
        """Estimated Jaccard of `sig` with each entry (the share of equal MinHash values)."""
        return (self.sigs[entries] == sig).mean(axis=1)

    def best(self, sig: Any, sketch: Any, threshold: float) -> tuple[int, float] | None:
        """The candidate with the highest estimated Jaccard, if that is >= threshold; ties go to
        the earliest entry."""
        cands = self.candidates(sketch)
        if not cands:
            return None
        est = self.estimate(cands, sig)
        i = int(est.argmax())
        return (cands[i], float(est[i])) if est[i] >= threshold else None
