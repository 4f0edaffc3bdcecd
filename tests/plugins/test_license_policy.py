"""License policy against records from differently licensed seed sets and teachers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distill.filter import KEEP, Drop
from distill.licenses import effective_tag
from distill.records import Generator, Record, Source
from distill.testing import make_record, run_filter
from distill_plugins.filters.license_policy import LicensePolicy


def seeded(license: str, dataset: str = "seeds") -> Record:
    return make_record("q", "a", dataset=dataset, license=license)


def generated(license: str, model: str, seed_license: str = "CC0-1.0", role: str = "generator") -> Record:
    r = seeded(seed_license)
    r.add_generator(Generator(role=role, plugin="openai", model=model, license=license))  # type: ignore[arg-type]
    r.provenance.license = effective_tag(r)
    return r


def test_intended_commercial_use_denies_non_commercial_and_academic():
    f = LicensePolicy(intended_use="commercial")
    recs = [
        seeded("CC-BY-4.0"),
        seeded("CC-BY-NC-4.0", "nc-set"),
        seeded("LicenseRef-Unspecified"),
        generated("LicenseRef-Qwen-Research", "qwen-r"),
        seeded("LicenseRef-Made-Up", "odd"),
    ]
    assert run_filter(f, recs) == [
        KEEP,
        Drop("license policy: use non-commercial not allowed (CC-BY-NC-4.0 from seed 'nc-set')"),
        KEEP,  # unspecified is not denied by a use category: deny_unknown is the switch for it
        Drop("license policy: use non-commercial not allowed (LicenseRef-Qwen-Research from generator 'qwen-r')"),
        Drop("license policy: use academic-only not allowed (LicenseRef-Made-Up from seed 'odd')"),
    ]
    assert run_filter(LicensePolicy(intended_use="non-commercial"), recs[1:2]) == [KEEP]


def test_deny_use_list():
    f = LicensePolicy(deny_use=["academic-only", "unspecified"])
    assert run_filter(f, [seeded("CC-BY-NC-4.0"), seeded("LicenseRef-Unspecified")]) == [
        KEEP,
        Drop("license policy: use unspecified not allowed (LicenseRef-Unspecified from seed 'seeds')"),
    ]


def test_restrictions_name_the_model_that_brought_them():
    f = LicensePolicy(deny_restrictions=["no-competing-models"])
    recs = [
        generated("LicenseRef-OpenAI-Terms", "gpt-4o"),
        generated("Apache-2.0", "smollm2"),
        generated("LicenseRef-Anthropic-Commercial-Terms", "claude", role="judge"),
    ]
    assert run_filter(f, recs) == [
        Drop(
            "license policy: restriction no-competing-models not allowed "
            "(LicenseRef-OpenAI-Terms from generator 'gpt-4o')"
        ),
        KEEP,
        Drop(
            "license policy: restriction no-competing-models not allowed "
            "(LicenseRef-Anthropic-Commercial-Terms from judge 'claude')"
        ),
    ]


def test_deny_and_allow_license_ids_in_compound_expressions():
    two = seeded("CC-BY-SA-4.0", "wiki")
    two.provenance.sources.append(Source(dataset="code", row=0, license="MIT OR GPL-3.0-only"))
    two.provenance.license = effective_tag(two)
    f = LicensePolicy(deny_licenses=["gpl-3.0"])  # alias and case normalised to GPL-3.0-only
    assert f.options.deny_licenses == ["GPL-3.0-only"]
    assert run_filter(f, [two, seeded("MIT")]) == [
        Drop("license policy: license GPL-3.0-only denied (MIT OR GPL-3.0-only from seed 'code')"),
        KEEP,
    ]
    f = LicensePolicy(allow_licenses=["MIT", "CC-BY-SA-4.0", "CC0-1.0"])
    assert run_filter(f, [seeded("CC0-1.0"), seeded("Apache-2.0", "apache-set"), two]) == [
        KEEP,
        Drop("license policy: license Apache-2.0 not in allow_licenses (Apache-2.0 from seed 'apache-set')"),
        Drop("license policy: license GPL-3.0-only not in allow_licenses (MIT OR GPL-3.0-only from seed 'code')"),
    ]


def test_deny_unknown_and_unspecified():
    f = LicensePolicy(deny_unknown=True)
    assert run_filter(
        f, [seeded("LicenseRef-Unspecified", "anon"), seeded("LicenseRef-Made-Up", "odd"), seeded("MIT")]
    ) == [
        Drop("license policy: unspecified license (LicenseRef-Unspecified from seed 'anon')"),
        Drop("license policy: unknown license LicenseRef-Made-Up (LicenseRef-Made-Up from seed 'odd')"),
        KEEP,
    ]


def test_the_filter_reads_the_tag_not_the_sources():
    r = seeded("MIT")
    r.provenance.license = r.provenance.license.model_copy(update={"use": "non-commercial"})
    assert run_filter(LicensePolicy(deny_use=["non-commercial"]), [r]) == [
        Drop("license policy: use non-commercial not allowed (MIT)")
    ]  # no source explains it


def test_policy_values_are_validated():
    with pytest.raises(ValidationError, match=r"unknown use category 'non-comercial' \(did you mean 'non-commercial'"):
        LicensePolicy(deny_use=["non-comercial"])
    with pytest.raises(ValidationError, match=r"unknown restriction 'no-competing-model' \(did you mean"):
        LicensePolicy(deny_restrictions=["no-competing-model"])
    with pytest.raises(ValidationError, match="invalid license expression 'MITT'"):
        LicensePolicy(deny_licenses=["MITT"])
    with pytest.raises(ValidationError, match="is an expression"):
        LicensePolicy(allow_licenses=["MIT OR Apache-2.0"])
    with pytest.raises(ValidationError, match="the policy is empty"):
        LicensePolicy()
    with pytest.raises(ValidationError):
        LicensePolicy(intended_use="unspecified")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        LicensePolicy(deny_use=["non-commercial"], deny_uses=["academic-only"])
    assert LicensePolicy(deny_licenses=["LicenseRef-Not-Yet-Listed"]).options.deny_licenses == [
        "LicenseRef-Not-Yet-Listed"
    ]
