"""Records, and the license rules that combine everything that touched one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distill.errors import ConfigError
from distill.licenses import combine_tags, effective_tag, normalize, tag_for
from distill.records import Candidate, Generator, Message, Record, Source, stable_id


def _record(**kw) -> Record:
    return Record(id="x", messages=[Message(role="user", content="hi")], **kw)


def test_preference_is_derived_from_scored_candidates():
    r = _record(
        candidates=[
            Candidate(content="a", score=0.2),
            Candidate(content="b", score=0.9),
            Candidate(content="c", score=0.5),
            Candidate(content="d"),
        ]
    )
    p = r.preference()
    assert (p.chosen, p.rejected) == ("b", "a") and p.margin == pytest.approx(0.7)
    assert (
        _record(candidates=[Candidate(content="a", score=1.0), Candidate(content="b", score=1.0)]).preference() is None
    )
    assert _record(candidates=[Candidate(content="a", score=1.0)]).preference() is None


def test_unknown_fields_are_rejected_and_json_round_trips():
    with pytest.raises(ValidationError):
        Record(id="x", messages=[], colour="red")
    r = _record()
    r.add_event("seeds", "loaded")
    assert Record.model_validate_json(r.to_json()) == r


def test_stable_ids():
    assert stable_id("a", 1) == stable_id("a", 1) != stable_id("a", 2)


def test_prompt_and_response():
    r = Record(
        id="x",
        messages=[
            Message(role="system", content="s"),
            Message(role="user", content="q"),
            Message(role="assistant", content="a"),
        ],
    )
    assert [m.role for m in r.prompt()] == ["system", "user"] and r.response() == "a"


def test_generators_are_deduplicated_and_indexed():
    r = _record()
    g = Generator(plugin="t", model="m", license="MIT")
    assert r.add_generator(g) == 0 and r.add_generator(g.model_copy()) == 0
    assert r.add_generator(Generator(plugin="t", model="m2", license="MIT")) == 1


def test_missing_license_is_unspecified():
    t = tag_for(None)
    assert t.use == "unspecified" and t.expression == "LicenseRef-Unspecified"


def test_most_restrictive_use_wins_and_flags_combine():
    r = _record()
    r.provenance.sources = [Source(dataset="a", license="CC-BY-NC-4.0"), Source(dataset="b", license="CC0-1.0")]
    r.provenance.generators = [Generator(plugin="t", model="llama", license="LicenseRef-Llama-3.1")]
    t = effective_tag(r)
    assert t.expression == "CC-BY-NC-4.0 AND CC0-1.0 AND LicenseRef-Llama-3.1"
    assert t.use == "non-commercial" and t.attribution and not t.share_alike
    assert t.name_prefixes == ["Llama"] and "Built with Llama" in t.notices


def test_an_unknown_license_counts_as_most_restrictive():
    t = tag_for("Zlib")  # valid SPDX, not in the registry
    assert t.use == "academic-only" and t.unknown == ["Zlib"]


def test_restrictions_are_unions():
    t = combine_tags([tag_for("LicenseRef-OpenAI-Terms"), tag_for("LicenseRef-Gemma-Terms")])
    assert t.restrictions == ["no-competing-models", "derivative-inherits-terms"]


def test_invalid_expression_names_it_and_suggests():
    with pytest.raises(ConfigError, match="invalid license expression 'Apache-2'.*did you mean Apache-2.0"):
        normalize("Apache-2")
    with pytest.raises(ConfigError, match="LicenseRef-Nope"):
        normalize("MIT AND LicenseRef-Nope")
    assert normalize("mit") == "MIT"
