"""`distill audit`: the scenario table, acknowledgements, custom rules, and the command end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from typer.testing import CliRunner
from util import config_dict, pipeline

from distill.audit.base import AuditRule, Finding, audit
from distill.audit.rules import BUILTIN, make_rules
from distill.config.release import Acknowledgement, ReleaseSettings, parse_ack
from distill.errors import ConfigError
from distill.hookspecs import hookimpl
from distill.licenses import UNSPECIFIED, builtin_registry
from distill.plugin import Options
from distill.records import Generator
from distill.registry import make_registry
from distill.testing import make_record

RULES = make_rules()


def records(
    n: int = 3,
    *,
    sources: tuple[tuple[str, str], ...] = (("acme-seeds", "CC0-1.0"),),
    models: tuple[tuple[str, str], ...] = (),
    judge: tuple[str, str] | None = None,
    start: int = 0,
):
    """`n` records from `sources` (dataset, license), written by `models` (model id, license)."""
    out = []
    for i in range(start, start + n):
        (dataset, license), *more = sources
        r = make_record(f"question {i}", f"answer {i}", id=f"r{i:03d}", dataset=dataset, license=license, row=i)
        for d, lic in more:
            r.provenance.sources.append(r.provenance.sources[0].model_copy(update={"dataset": d, "license": lic}))
        for model, lic in models:
            r.add_generator(Generator(plugin="openai", model=model, license=lic))
        if judge:
            r.add_generator(Generator(role="judge", plugin="openai", model=judge[0], license=judge[1]))
        out.append(r)
    return out


def run(recs, **release):
    acks = [Acknowledgement(**a) for a in release.pop("acks", [])]
    return audit(recs, ReleaseSettings(**release), builtin_registry(), RULES, target="test", cli_acks=acks)


@dataclass
class Scenario:
    id: str
    records: list
    release: dict
    exit: int
    present: set = field(default_factory=set)  # (rule, severity, license) that must be found
    absent: set = field(default_factory=set)  # severities or (rule, severity, license) that must not be


COMPETES = {"rule": "no-competing-models", "reason": "a support bot; does not compete with OpenAI", "by": "legal"}
GEMMA_ACK = {
    "rule": "derivative-inherits-terms",
    "license": "LicenseRef-Gemma-Terms",
    "reason": "we pass on the Gemma terms with the model",
}

SCENARIOS = [
    Scenario(
        "non-commercial seeds, commercial release",
        records(sources=(("nc-seeds", "CC-BY-NC-4.0"),), models=(("smollm2", "Apache-2.0"),)),
        {"use": "commercial", "what": "data", "name": "acme"},
        1,
        {("use-category", "blocking", "CC-BY-NC-4.0")},
    ),
    Scenario(
        "non-commercial seeds, research release",
        records(sources=(("nc-seeds", "CC-BY-NC-4.0"),), models=(("smollm2", "Apache-2.0"),)),
        {"use": "research", "what": "data", "name": "acme"},
        0,
        set(),
        {"blocking", "acknowledge"},
    ),
    Scenario(
        "API terms forbid competing models",
        records(models=(("gpt-4o", "LicenseRef-OpenAI-Terms"),)),
        {"what": "model", "name": "acme-7b", "base_model": "mistralai/Mistral-7B-v0.1"},
        1,
        {("no-competing-models", "acknowledge", "LicenseRef-OpenAI-Terms")},
        {"blocking"},
    ),
    Scenario(
        "API terms forbid competing models, acknowledged",
        records(models=(("gpt-4o", "LicenseRef-OpenAI-Terms"),)),
        {"what": "model", "name": "acme-7b", "base_model": "mistralai/Mistral-7B-v0.1", "acks": [COMPETES]},
        0,
        {("no-competing-models", "acknowledge", "LicenseRef-OpenAI-Terms")},
    ),
    Scenario(
        "API judge outputs in a data release",
        records(models=(("smollm2", "Apache-2.0"),), judge=("gpt-4o", "LicenseRef-OpenAI-Terms")),
        {"what": "data"},
        1,
        {("no-competing-models", "acknowledge", "LicenseRef-OpenAI-Terms")},
    ),
    Scenario(
        "Llama 3.0 outputs train a non-Llama student",
        records(models=(("meta-llama/Meta-Llama-3-70B-Instruct", "LicenseRef-Llama-3"),)),
        {"what": "model", "name": "acme-student", "base_model": "Qwen/Qwen2.5-7B"},
        1,
        {("no-improve-other-llm", "blocking", "LicenseRef-Llama-3"), ("name-prefix", "blocking", "LicenseRef-Llama-3")},
    ),
    Scenario(
        "Llama 3.0 outputs train a Llama 3 student named for it",
        records(models=(("meta-llama/Meta-Llama-3-70B-Instruct", "LicenseRef-Llama-3"),)),
        {"what": "model", "name": "acme/Llama-3-Acme-8B", "base_model": "meta-llama/Meta-Llama-3-8B"},
        0,
        {
            ("no-improve-other-llm", "info", "LicenseRef-Llama-3"),
            ("name-prefix", "info", "LicenseRef-Llama-3"),
            ("monthly-user-cap", "info", "LicenseRef-Llama-3"),
        },
        {"blocking", "acknowledge"},
    ),
    Scenario(
        "Llama 3.1 outputs, student name lacks the prefix",
        records(models=(("meta-llama/Llama-3.1-70B-Instruct", "LicenseRef-Llama-3.1"),)),
        {"what": "model", "name": "acme-student", "base_model": "Qwen/Qwen2.5-7B"},
        1,
        {("name-prefix", "blocking", "LicenseRef-Llama-3.1")},
        {("no-improve-other-llm", "blocking", "LicenseRef-Llama-3.1")},
    ),
    Scenario(
        "Llama 3.1 outputs, student named Llama-...",
        records(models=(("meta-llama/Llama-3.1-70B-Instruct", "LicenseRef-Llama-3.1"),)),
        {"what": "model", "name": "Llama-Acme-7B", "base_model": "Qwen/Qwen2.5-7B"},
        0,
        {("name-prefix", "info", "LicenseRef-Llama-3.1"), ("acceptable-use", "info", "LicenseRef-Llama-3.1")},
        {"blocking"},
    ),
    Scenario(
        "Llama 3.1 outputs released as data",
        records(models=(("meta-llama/Llama-3.1-70B-Instruct", "LicenseRef-Llama-3.1"),)),
        {"what": "data", "name": "acme-data"},
        0,
        {("name-prefix", "info", "LicenseRef-Llama-3.1")},
    ),
    Scenario(
        "Gemma outputs pass on its terms",
        records(models=(("google/gemma-2-27b-it", "LicenseRef-Gemma-Terms"),)),
        {"what": "model", "name": "acme-student", "base_model": "HuggingFaceTB/SmolLM2-360M"},
        1,
        {("derivative-inherits-terms", "acknowledge", "LicenseRef-Gemma-Terms")},
        {"blocking"},
    ),
    Scenario(
        "Gemma outputs pass on its terms, acknowledged",
        records(models=(("google/gemma-2-27b-it", "LicenseRef-Gemma-Terms"),)),
        {"what": "model", "name": "acme-student", "base_model": "HuggingFaceTB/SmolLM2-360M", "acks": [GEMMA_ACK]},
        0,
        {("notices", "info", "LicenseRef-Gemma-Terms")},
    ),
    Scenario(
        "mixed permissive sources",
        records(sources=(("a", "MIT"), ("b", "CC-BY-4.0"), ("c", "CC0-1.0")), models=(("smollm2", "Apache-2.0"),)),
        {"use": "commercial", "what": "data"},
        0,
        {("notices", "info", "MIT"), ("notices", "info", "CC-BY-4.0"), ("notices", "info", "Apache-2.0")},
        {"blocking", "acknowledge"},
    ),
    Scenario(
        "an unknown model",
        records(models=(("mystery-7b", UNSPECIFIED),)),
        {"use": "research", "what": "data"},
        1,
        {("unknown-terms", "blocking", UNSPECIFIED)},
    ),
    Scenario(
        "an unregistered LicenseRef in a record",
        records(models=(("inhouse", "LicenseRef-Acme-Internal"),)),
        {"use": "research", "what": "data"},
        1,
        {("unknown-terms", "blocking", "LicenseRef-Acme-Internal")},
        {("use-category", "blocking", "LicenseRef-Acme-Internal")},
    ),
    Scenario(
        "a share-alike source in a model release",
        records(sources=(("wiki", "CC-BY-SA-4.0"),)),
        {"what": "model", "name": "x", "base_model_license": "Apache-2.0"},
        1,
        {("share-alike", "acknowledge", "CC-BY-SA-4.0")},
    ),
    Scenario(
        "more users than the license allows",
        records(models=(("meta-llama/Llama-3.1-70B-Instruct", "LicenseRef-Llama-3.1"),)),
        {"what": "data", "monthly_users": 800_000_000},
        1,
        {("monthly-user-cap", "blocking", "LicenseRef-Llama-3.1")},
    ),
    Scenario(
        "a model release without a base model",
        records(),
        {"what": "model", "name": "x"},
        1,
        {("base-model", "acknowledge", None)},
    ),
    Scenario(
        "a non-commercial base model",
        records(),
        {"what": "model", "name": "x", "base_model": "Qwen/Qwen2.5-3B-Instruct"},
        1,
        {("use-category", "blocking", "LicenseRef-Qwen-Research")},
    ),
]


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenarios(s: Scenario):
    report = run(s.records, **s.release)
    found = {(f.rule, f.severity, f.license) for f in report.findings}
    assert s.present <= found, report.findings
    for a in s.absent:
        if isinstance(a, str):
            assert not [f for f in report.findings if f.severity == a and not f.acknowledged], report.findings
        else:
            assert a not in found
    assert report.exit_code == s.exit, [f for f in report.open_findings()]
    assert report.verdict == (
        "cleared"
        if s.exit == 0
        else "blocked"
        if any(f.severity == "blocking" for f in report.findings)
        else "needs-acknowledgement"
    )
    from_records = {u.license for u in report.licenses if u.records}  # not only the base model's
    for f in report.findings:
        if f.license in from_records:
            assert f.records == len(s.records) and f.examples == sorted(r.id for r in s.records)[:5]


def test_a_record_dropped_by_the_license_filter_no_longer_counts():
    kept = records(4, models=(("smollm2", "Apache-2.0"),))
    dropped = records(2, sources=(("nc-seeds", "CC-BY-NC-4.0"),), start=10)
    assert run(kept + dropped, use="commercial").exit_code == 1
    report = run(kept, use="commercial")
    assert report.exit_code == 0 and report.records == 4
    assert "CC-BY-NC-4.0" not in report.license.expression
    assert {u.license for u in report.licenses} == {"Apache-2.0", "CC0-1.0"}


def test_counts_and_examples_are_per_license():
    recs = records(7, sources=(("nc", "CC-BY-NC-4.0"),)) + records(2, start=50)
    (f,) = [f for f in run(recs).findings if f.rule == "use-category"]
    assert f.records == 7 and f.examples == ["r000", "r001", "r002", "r003", "r004"]
    assert f.fix and "license-policy" in f.fix


def test_the_dataset_tag_combines_records():
    recs = records(2, models=(("m", "LicenseRef-Llama-3.1"),)) + records(2, sources=(("b", "MIT"),), start=9)
    report = run(recs)
    t = report.license
    assert t.expression == "CC0-1.0 AND LicenseRef-Llama-3.1 AND MIT"
    assert t.attribution and t.name_prefixes == ["Llama"] and "Built with Llama" in t.notices


def test_acknowledgements_are_recorded_with_their_source_and_unused_ones_warned():
    recs = records(models=(("gpt-4o", "LicenseRef-OpenAI-Terms"),))
    report = audit(
        recs,
        ReleaseSettings(acknowledge=[Acknowledgement(**COMPETES)]),
        builtin_registry(),
        RULES,
        cli_acks=[parse_ack("share-alike=not relevant here")],
    )
    assert report.exit_code == 0
    (f,) = [f for f in report.findings if f.rule == "no-competing-models"]
    assert f.acknowledged.reason == COMPETES["reason"] and f.acknowledged.by == "legal"
    by_rule = {a.rule: a for a in report.acknowledgements}
    assert by_rule["no-competing-models"].source == "config" and by_rule["no-competing-models"].matched == 1
    assert by_rule["share-alike"].source == "cli" and by_rule["share-alike"].matched == 0
    assert any("share-alike matched no finding" in w for w in report.warnings)


def test_an_acknowledgement_for_another_license_does_not_apply():
    recs = records(models=(("gpt-4o", "LicenseRef-OpenAI-Terms"),))
    report = run(recs, acks=[{"rule": "no-competing-models", "license": "LicenseRef-Gemini-API-Terms", "reason": "x"}])
    assert report.exit_code == 1


def test_blocking_findings_cannot_be_acknowledged():
    recs = records(sources=(("nc", "CC-BY-NC-4.0"),))
    report = run(recs, acks=[{"rule": "use-category", "reason": "we think it is fine"}])
    assert report.exit_code == 1 and report.verdict == "blocked"
    assert any("cannot be acknowledged" in w for w in report.warnings)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("no-competing-models", "expected RULE[:LICENSE]=REASON"),
        ("no-competing-models=  ", "a reason is required"),
        ("=because", "the rule is missing"),
        ("no-competing-models:LicenseRef-Nope=x", "LicenseRef-Nope"),
    ],
)
def test_bad_acks_are_errors(text, fragment):
    with pytest.raises(ConfigError, match="--ack") as exc:
        parse_ack(text)
    assert fragment in str(exc.value)


def test_an_ack_of_an_unknown_rule_is_an_error_with_a_suggestion():
    with pytest.raises(
        ConfigError, match="unknown audit rule 'no-competing-model' \\(did you mean 'no-competing-models'"
    ):
        run(records(), acks=[{"rule": "no-competing-model", "reason": "x"}])


# -- custom rules through the plugin hook ----------------------------------------------------


class NoApiTeachers(AuditRule):
    """An organisation's policy: nothing written by a hosted API model ships."""

    name = "acme-no-api-teachers"
    description = "Acme ships nothing written by hosted API models."

    class Options(Options):
        allowed: list[str] = []

    def check(self, audit_input):
        out = []
        for key, info in audit_input.with_terms():
            if info.restriction == "no-competing-models" and key not in self.options.allowed:
                out.append(audit_input.finding(self.name, "blocking", key, f"Acme policy: no {key} outputs"))
        return out


class Exploding(AuditRule):
    name = "acme-exploding"

    def check(self, audit_input):
        raise RuntimeError("policy service down")


class AcmePolicy:
    def __init__(self, *rules):
        self.rules = rules

    @hookimpl
    def register_audit_rules(self, register):
        for r in self.rules:
            register(r)


def test_custom_rules_register_through_the_hook_and_take_options():
    reg = make_registry(entry_points=False, extra=[("acme", AcmePolicy(NoApiTeachers))])
    assert [s.name for s in reg.all() if s.kind == "audit-rule"] == ["acme-no-api-teachers"]
    recs = records(models=(("gpt-4o", "LicenseRef-OpenAI-Terms"),))
    release = ReleaseSettings(acknowledge=[Acknowledgement(**COMPETES)])
    report = audit(recs, release, builtin_registry(), make_rules(reg))
    assert ("acme-no-api-teachers", "blocking", "LicenseRef-OpenAI-Terms") in {
        (f.rule, f.severity, f.license) for f in report.findings
    }
    assert report.exit_code == 1
    allowed = make_rules(reg, {"acme-no-api-teachers": {"allowed": ["LicenseRef-OpenAI-Terms"]}})
    assert audit(recs, release, builtin_registry(), allowed).exit_code == 0
    with pytest.raises(ConfigError, match="release.rules.acme-no-api-teachers.allowd: unknown key"):
        make_rules(reg, {"acme-no-api-teachers": {"allowd": []}})
    with pytest.raises(ConfigError, match="release.rules.acme-no-api-teacher: no audit rule of that name"):
        make_rules(reg, {"acme-no-api-teacher": {}})


def test_a_failing_rule_blocks_instead_of_passing_silently():
    reg = make_registry(entry_points=False, extra=[("acme", AcmePolicy(Exploding))])
    report = audit(records(), ReleaseSettings(), builtin_registry(), make_rules(reg))
    (f,) = [f for f in report.findings if f.rule == "acme-exploding"]
    assert f.severity == "blocking" and "policy service down" in f.message and report.exit_code == 1


def test_a_rule_plugin_cannot_take_a_builtin_name():
    class Impostor(AuditRule):
        name = "unknown-terms"

        def check(self, audit_input):
            return []

    reg = make_registry(entry_points=False, extra=[("acme", AcmePolicy(Impostor))])
    with pytest.raises(ConfigError, match="a built-in rule's name"):
        make_rules(reg)


def test_builtin_rules_have_unique_names_and_descriptions():
    names = [r.name for r in BUILTIN]
    assert len(names) == len(set(names)) and all(r.description for r in BUILTIN)
    assert all(isinstance(f, Finding) for f in run(records()).findings)


# -- the command, on a real pipeline's output ---------------------------------------------


def _cli(*args):
    from distill.cli.app import app

    return CliRunner().invoke(app, ["audit", *map(str, args)])


def _run_pipeline(tmp_path, teacher_options=None, **over):
    cfg = config_dict(tmp_path, **over)
    for key, value in (teacher_options or {}).items():
        cfg["teachers"]["writer"]["options"][key] = value
    result = pipeline(cfg).run()
    return tmp_path / "out", result, cfg


def test_audit_command_json_markdown_and_exit_codes(tmp_path):
    out, _, _ = _run_pipeline(tmp_path)
    r = _cli(out, "--use", "commercial", "--release", "data", "--name", "acme-support", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "cleared" and rep["stage"] == "sft" and rep["release"]["name"] == "acme-support"
    assert rep["records"] > 0 and {u["license"] for u in rep["licenses"]} == {"Apache-2.0", "CC0-1.0"}
    assert "not legal advice" in rep["disclaimer"].lower()
    assert (out / "audits" / "data-commercial-acme-support.json").is_file()
    r = _cli(out, "--format", "markdown", "--no-write")
    assert r.exit_code == 0 and "# License audit: commercial release of data" in r.stdout
    assert "Not legal advice" in r.stdout and "Why: every one of the 2 license(s)" in r.stdout
    r = _cli(out)  # the table
    assert r.exit_code == 0 and "verdict: cleared" in r.stdout and "Not legal advice" in r.stdout


def test_audit_command_needs_acknowledgement_then_records_it(tmp_path):
    out, _, _ = _run_pipeline(tmp_path, teacher_options={"license": "LicenseRef-OpenAI-Terms"})
    base = [out, "--release", "model", "--name", "acme-7b", "--base-model", "mistralai/Mistral-7B-v0.1"]
    r = _cli(*base, "--json")
    assert r.exit_code == 1
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "needs-acknowledgement"
    (f,) = [f for f in rep["findings"] if f["rule"] == "no-competing-models"]
    assert f["severity"] == "acknowledge" and f["acknowledged"] is None and f["records"] > 0 and f["examples"]
    r = _cli(
        *base,
        "--json",
        "--ack",
        "no-competing-models:LicenseRef-OpenAI-Terms=a router help desk, not a general assistant",
    )
    assert r.exit_code == 0, r.stdout
    rep = json.loads(r.stdout)
    (a,) = rep["acknowledgements"]
    assert a["source"] == "cli" and a["matched"] == 1 and a["reason"].startswith("a router help desk")
    saved = json.loads((out / "audits" / "model-commercial-acme-7b.json").read_text())
    assert saved["acknowledgements"] == rep["acknowledgements"]


def test_acknowledgements_in_the_config_are_recorded(tmp_path):
    release = {
        "what": "model",
        "name": "acme-7b",
        "base_model_license": "Apache-2.0",
        "acknowledge": [{"rule": "no-competing-models", "reason": "reviewed by counsel", "by": "legal"}],
    }
    out, _, _ = _run_pipeline(tmp_path, release=release, teacher_options={"license": "LicenseRef-OpenAI-Terms"})
    r = _cli(out, "--json", "--no-write")
    assert r.exit_code == 0, r.stdout
    (a,) = json.loads(r.stdout)["acknowledgements"]
    assert (a["source"], a["by"], a["reason"]) == ("config", "legal", "reviewed by counsel")
    r = _cli(out, "--json", "--no-write", "--release", "data")  # flags override the config's release
    assert json.loads(r.stdout)["release"]["what"] == "data"


def test_an_unknown_model_warns_in_the_run_and_blocks_the_audit(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["license"] = UNSPECIFIED
    logged = []
    p = pipeline(cfg)
    p.log = logged.append
    result = p.run()
    (warning,) = [w for w in result.warnings if "teacher 'writer'" in w]
    assert "echo-model" in warning and "`license:` in teachers.writer.options" in warning
    assert any("teacher 'writer'" in m for m in logged)
    r = _cli(tmp_path / "out", "--use", "research", "--json", "--no-write")
    assert r.exit_code == 1
    (f,) = [f for f in json.loads(r.stdout)["findings"] if f["rule"] == "unknown-terms"]
    assert "echo-model" in f["message"] and "license:" in f["fix"]


def test_model_rules_in_the_config_resolve_an_undeclared_teacher(tmp_path):
    cfg = config_dict(tmp_path, models=[{"model": "echo-*", "license": "MIT"}])
    cfg["teachers"]["writer"]["options"]["license"] = UNSPECIFIED
    cfg["teachers"]["inventor"]["options"]["license"] = UNSPECIFIED
    result = pipeline(cfg).run()
    assert not [w for w in result.warnings if "terms are unknown" in w]
    from distill.io.store import read_shards

    d = tmp_path / "out" / "stages" / "sft"
    m = json.loads((d / "manifest.json").read_text())
    recs = list(read_shards(d, [s["kept_file"] for s in m["shards"]]))
    assert recs and all(g.license == "MIT" for r in recs for g in r.provenance.generators)
    assert all(r.provenance.license.expression == "CC0-1.0 AND MIT" for r in recs)


def test_a_license_policy_style_filter_drop_removes_the_license_from_the_audit(tmp_path):
    """Two seed sets, one non-commercial; a filter drops its records; the audit no longer sees it."""
    from util import write_seeds

    from distill.filter import Filter

    class DropNonCommercial(Filter):
        name = "drop-nc"

        def check(self, record):
            return record.provenance.license.use == "commercial" or (False, "license: not commercial")

    class Plugins:
        @hookimpl
        def register_filters(self, register):
            register(DropNonCommercial)

    nc = write_seeds(tmp_path, ['{"prompt": "What does the NC set say about routers today?"}'], name="nc.jsonl")
    cfg = config_dict(tmp_path)
    cfg["seeds"].append({"path": str(nc), "license": "CC-BY-NC-4.0", "name": "nc-seeds"})
    pipeline(cfg).run()
    assert _cli(tmp_path / "out", "--json", "--no-write").exit_code == 1
    cfg["stages"][2]["filters"].append("drop-nc")
    pipeline(cfg, ("drop", Plugins())).run()
    r = _cli(tmp_path / "out", "--json", "--no-write")
    assert r.exit_code == 0, r.stdout
    assert "CC-BY-NC-4.0" not in {u["license"] for u in json.loads(r.stdout)["licenses"]}


def test_audit_errors_exit_2(tmp_path):
    r = _cli(tmp_path)
    assert r.exit_code == 2 and "not a distill output folder" in r.output
    (tmp_path / "run").mkdir()
    out, _, _ = _run_pipeline(tmp_path / "run")
    r = _cli(out, "--use", "commercal")
    assert r.exit_code == 2 and "release.use" in r.output
    r = _cli(out, "--stage", "nope")
    assert r.exit_code == 2 and "no stage 'nope'" in r.output
    r = _cli(out, "--ack", "no-competing-modles=x")
    assert r.exit_code == 2 and "did you mean 'no-competing-models'" in r.output


def test_audit_of_an_export_folder_and_of_another_stage(tmp_path):
    out, _, _ = _run_pipeline(tmp_path)
    r = _cli(out / "export" / "sft", "--json", "--no-write")
    assert r.exit_code == 0 and json.loads(r.stdout)["stage"] == "sft"
    r = _cli(out, "--stage", "seeds", "--json", "--no-write")
    rep = json.loads(r.stdout)
    assert rep["stage"] == "seeds" and {u["license"] for u in rep["licenses"]} == {"CC0-1.0"}


def test_the_configs_registry_is_in_effect_for_the_run_and_a_change_restamps_tags(tmp_path):
    from distill.io.store import read_shards

    def stamped():
        d = tmp_path / "out" / "stages" / "sft"
        m = json.loads((d / "manifest.json").read_text())
        return [r.provenance.license for r in read_shards(d, [s["kept_file"] for s in m["shards"]])]

    cfg = config_dict(tmp_path, licenses={"LicenseRef-Acme-Internal": {"use": "commercial"}})
    cfg["seeds"][0]["license"] = "LicenseRef-Acme-Internal"
    pipeline(cfg).run()
    tags = stamped()
    assert tags and all(t.use == "commercial" and t.unknown == [] for t in tags)
    assert _cli(tmp_path / "out", "--json", "--no-write").exit_code == 0
    cfg["licenses"]["LicenseRef-Acme-Internal"]["use"] = "non-commercial"
    pipeline(cfg).run()
    assert all(t.use == "non-commercial" for t in stamped())
    r = _cli(tmp_path / "out", "--json", "--no-write")
    assert r.exit_code == 1
    found = {(f["rule"], f["license"]) for f in json.loads(r.stdout)["findings"]}
    assert ("use-category", "LicenseRef-Acme-Internal") in found
