"""The basic filters on hand-built records, through the helpers plugin authors use."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distill.filter import KEEP, Drop
from distill.testing import make_record, run_filter
from distill_plugins.filters.dedup import ExactDedup
from distill_plugins.filters.quality import LengthFilter


def test_length_bounds_with_reasons():
    f = LengthFilter(field="response", min_words=2, max_words=4)
    recs = [make_record("q", "one"), make_record("q", "two words"), make_record("q", "a b c d e")]
    assert run_filter(f, recs) == [
        Drop("response too short: 1 < 2 words"),
        KEEP,
        Drop("response too long: 5 > 4 words"),
    ]
    with pytest.raises(ValidationError, match="max_words must be >= min_words"):
        LengthFilter(min_words=5, max_words=2)
    with pytest.raises(ValidationError, match="extra"):
        LengthFilter(min_word=5)


def test_exact_dedup_normalises_and_names_the_kept_record():
    f = ExactDedup(field="prompt")
    a = make_record("How do I reset my router?", id="a")
    b = make_record("how do i   reset my router", id="b")
    c = make_record("How do I update firmware?", id="c")
    assert run_filter(f, [a, b, c]) == [KEEP, Drop("duplicate: same normalised prompt as record a"), KEEP]
    assert run_filter(f, [make_record("HOW DO I RESET MY ROUTER!", id="d")]) == [
        Drop("duplicate: same normalised prompt as record a")
    ]


def test_exact_dedup_restores_its_state_on_resume():
    f = ExactDedup(field="both")
    f.restore([make_record("q", "r", id="kept-before")])
    assert run_filter(f, [make_record("Q", "R.", id="new")]) == [
        Drop("duplicate: same normalised both as record kept-before")
    ]


def test_make_record_has_full_provenance():
    r = make_record("q", "a", license="CC-BY-NC-4.0")
    assert r.provenance.license.use == "non-commercial" and r.provenance.events[0].action == "loaded"


def test_min_score_drops_what_no_candidate_passed_and_pairs_without_a_margin():
    from distill_plugins.scores import ScoreFilter

    recs = [
        make_record("q", "a", candidates=[("good", 1.0), ("bad", 0.0)]),
        make_record("q", "a", candidates=[("meh", 0.5), ("bad", 0.0)]),
        make_record("q", "a", candidates=[("good", 1.0), ("also good", 1.0)]),
        make_record("q", "a seed answer"),
    ]
    assert run_filter(ScoreFilter(min_score=1.0), recs) == [
        KEEP,
        Drop("low score: best of 2 is 0.5, below 1"),
        KEEP,
        Drop("unranked: no scored candidates"),
    ]
    assert run_filter(ScoreFilter(min_score=1.0, min_margin=0.5, unscored="keep"), recs) == [
        KEEP,
        Drop("low score: best of 2 is 0.5, below 1"),
        Drop("small margin: best 1 and worst 1 differ by less than 0.5"),
        KEEP,
    ]
