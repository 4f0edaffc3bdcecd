"""Cards: every export gets a dataset card, Croissant metadata and a NOTICE; students get a model card."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
import yaml
from typer.testing import CliRunner
from util import config_dict, pipeline

from distill.audit.base import audit
from distill.audit.rules import make_rules
from distill.audit.target import STUDENT_MANIFEST
from distill.cards.dataset import croissant, dataset_card, notice, write_dataset_cards
from distill.cards.model import model_card
from distill.config.release import Acknowledgement, ReleaseSettings
from distill.layout import CARD_FILES
from distill.licenses import builtin_registry, tag_for
from distill.records import Generator
from distill.testing import make_record

REG = builtin_registry()


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


def _records(
    n=4,
    models=(
        ("meta-llama/Llama-3.1-70B-Instruct", "LicenseRef-Llama-3.1"),
        ("google/gemma-2-27b-it", "LicenseRef-Gemma-Terms"),
    ),
):
    out = []
    for i in range(n):
        r = make_record(f"q{i}", f"a{i}", id=f"r{i}", dataset="acme-seeds", license="CC-BY-4.0", row=i)
        for model, lic in models:
            r.add_generator(Generator(plugin="vllm", model=model, revision="main", license=lic))
        out.append(r)
    return out


def _report(records, **release):
    return audit(records, ReleaseSettings(**release), REG, make_rules(), target="t")


def test_cards_are_written_at_export(tmp_path):
    datasets = pytest.importorskip("datasets")
    result = pipeline(config_dict(tmp_path)).run()
    path = tmp_path / "out" / "export" / "sft"
    assert all((path / f).is_file() for f in CARD_FILES)
    sidecar = json.loads((path / "distill-dataset.json").read_text())
    assert sidecar["license_tag"]["expression"] == "Apache-2.0 AND CC0-1.0" and sidecar["audit"]["verdict"] == "cleared"
    assert datasets.load_from_disk(str(path)).num_rows == result.stages[-1].totals["kept"]  # still a dataset

    card = (path / "README.md").read_text()
    meta = _front(card)
    assert meta["license"] == "other" and meta["license_name"] == "apache-2.0-and-cc0-1.0"
    assert meta["license_link"] == "NOTICE" and meta["license_expression"] == "Apache-2.0 AND CC0-1.0"
    assert meta["source_datasets"] == ["acme-seeds"] and meta["annotations_creators"] == ["machine-generated"]
    assert "synthetic" in meta["tags"]
    assert "Not legal advice" in card and "**Verdict: cleared**" in card and "| generator | echo | echo-model |" in card

    c = json.loads((path / "croissant.json").read_text())
    assert c["@type"] == "sc:Dataset" and c["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert c["@context"]["prov"] == "http://www.w3.org/ns/prov#"
    assert [(e["name"], e["license"]) for e in c["prov:wasDerivedFrom"]] == [("acme-seeds", "CC0-1.0")]
    assert {a["name"] for a in c["prov:wasAttributedTo"]} == {"echo-model"}
    assert {a["name"] for a in c["prov:wasGeneratedBy"]} >= {"instructions", "responses"}
    assert c["rai:machineAnnotationTools"] == ["echo-model"] and "cleared" in c["sc:usageInfo"]
    files = [d for d in c["distribution"] if d["@type"] == "cr:FileObject"]
    assert files
    for d in files:
        assert hashlib.sha256((path / d["name"]).read_bytes()).hexdigest() == d["sha256"]

    text = (path / "NOTICE").read_text()
    assert "Apache-2.0: Apache License 2.0" in text and "Contains material licensed under the Apache License" in text
    assert "CC0-1.0" in text and "not legal advice" in text.lower()


def test_cards_follow_the_release_policy_without_redoing_the_export(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["license"] = "LicenseRef-OpenAI-Terms"
    result = pipeline(cfg).run()
    readme = tmp_path / "out" / "export" / "sft" / "README.md"
    assert "needs-acknowledgement" in readme.read_text()
    assert any("export 'sft': the license audit" in w for w in result.warnings)
    cfg["release"] = {
        "name": "acme-support",
        "acknowledge": [
            {"rule": "no-competing-models", "reason": "receivers are told of the OpenAI terms", "by": "legal"}
        ],
    }
    result = pipeline(cfg).run()
    assert result.stages[-1].skipped  # the policy is not part of the data
    card = readme.read_text()
    assert "**Verdict: cleared**" in card and "receivers are told of the OpenAI terms" in card
    assert _front(card)["pretty_name"] == "acme-support"


def test_audit_command_refreshes_the_cards_with_its_acknowledgements(tmp_path):
    from distill.cli.app import app

    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["license"] = "LicenseRef-OpenAI-Terms"
    pipeline(cfg).run()
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app, ["audit", str(out), "--name", "acme", "--ack", "no-competing-models=help-desk answers only"]
    )
    assert r.exit_code == 0, r.output
    card = (out / "export" / "sft" / "README.md").read_text()
    assert "help-desk answers only" in card and "| no-competing-models | any |" in card


def test_secrets_never_reach_the_cards(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHO_SECRET", "sk-very-secret-value")
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["api_key"] = "${ECHO_SECRET}"
    pipeline(cfg).run()
    for f in CARD_FILES:
        assert "sk-very-secret-value" not in (tmp_path / "out" / "export" / "sft" / f).read_text()


def test_cards_are_deterministic(tmp_path):
    recs = _records(6)
    a, b = tmp_path / "a", tmp_path / "b"
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    written = write_dataset_cards(a, "acme", recs, _report(recs), REG)
    write_dataset_cards(b, "acme", shuffled, _report(shuffled), REG)
    assert {p.name for p in written} == {*CARD_FILES, "distill-dataset.json"}
    for p in written:
        assert p.read_bytes() == (b / p.name).read_bytes(), p.name


def test_notice_collects_every_required_notice_and_passed_on_restriction():
    recs = _records()
    text = notice("acme", _report(recs), REG)
    for key in ("LicenseRef-Llama-3.1", "LicenseRef-Gemma-Terms", "CC-BY-4.0", "seed set 'acme-seeds'"):
        assert key in text
    for n in REG.info("LicenseRef-Llama-3.1").notices + REG.info("LicenseRef-Gemma-Terms").notices:
        assert n in text
    assert "Restriction passed on to receivers: derivative-inherits-terms." in text
    assert "must have a name beginning 'Llama'" in text and "https://llama.meta.com/llama3_1/use-policy" in text
    assert text.index("CC-BY-4.0") < text.index("LicenseRef-Gemma-Terms") < text.index("LicenseRef-Llama-3.1")


def test_dataset_card_for_a_single_license_uses_the_hub_id_and_lists_restrictions():
    recs = [make_record("q", "a", id="x", license="CC-BY-4.0")]
    meta = _front(dataset_card("d", recs, _report(recs), REG))
    assert meta["license"] == "cc-by-4.0" and "license_name" not in meta
    recs = _records(2)
    card = dataset_card("d", recs, _report(recs), REG)
    assert "output restrictions passed on: derivative-inherits-terms" in card
    assert "must have a name beginning: Llama" in card
    c = croissant("d", recs, _report(recs), REG)
    assert "https://ai.google.dev/gemma/terms" in c["license"]
    assert {a["prov:hadRole"] for a in c["prov:wasAttributedTo"]} == {"generator"}


def test_model_card_inherits_the_datasets_and_the_base_model():
    tags = [tag_for("CC0-1.0 AND LicenseRef-Gemma-Terms")]
    card = model_card(
        "acme-student", tags, "HuggingFaceTB/SmolLM2-360M", "Apache-2.0", REG, datasets=["acme/support-sft"]
    )
    meta = _front(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-360M" and meta["base_model_relation"] == "finetune"
    assert meta["datasets"] == ["acme/support-sft"] and meta["license"] == "other"
    assert meta["license_expression"] == "Apache-2.0 AND CC0-1.0 AND LicenseRef-Gemma-Terms"
    assert REG.info("LicenseRef-Gemma-Terms").notices[0] in card
    assert "restrictions passed on: derivative-inherits-terms" in card and "Not legal advice" in card
    card = model_card("acme-student", [tag_for("LicenseRef-Llama-3.1")], None, None, REG)
    assert "required name prefix 'Llama': MISSING" in card and "base model: not declared" in card
    assert "required name prefix 'Llama': present" in model_card(
        "Llama-Acme", [tag_for("LicenseRef-Llama-3.1")], None, None, REG
    )
    assert model_card("x", tags, "b", "MIT", REG) == model_card("x", list(reversed(tags)), "b", "MIT", REG)


def test_model_card_carries_the_audit_and_its_acknowledgements():
    recs = _records(2, models=(("google/gemma-2-27b-it", "LicenseRef-Gemma-Terms"),))
    ack = Acknowledgement(rule="derivative-inherits-terms", reason="Gemma terms ship with the model")
    report = audit(
        recs,
        ReleaseSettings(what="model", name="acme", base_model_license="Apache-2.0", acknowledge=[ack]),
        REG,
        make_rules(),
    )
    card = model_card("acme", [report.license], None, "Apache-2.0", REG, report=report)
    assert report.exit_code == 0 and "Gemma terms ship with the model" in card and "**Verdict: cleared**" in card


def test_a_student_folder_is_audited_and_the_audit_saved_beside_it(tmp_path):
    from distill.cli.app import app

    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["license"] = "LicenseRef-Llama-3.1"
    pipeline(cfg).run()
    student = tmp_path / "student"
    student.mkdir()
    manifest = {"name": "acme-student", "base_model": "Qwen/Qwen2.5-0.5B", "datasets": ["../out/export/sft"]}
    (student / STUDENT_MANIFEST).write_text(json.dumps(manifest))
    r = CliRunner().invoke(app, ["audit", str(student), "--json"])
    assert r.exit_code == 1, r.output
    rep = json.loads(r.stdout)
    assert rep["kind"] == "student" and rep["release"]["what"] == "model" and rep["base_model_license"] == "Apache-2.0"
    assert ("name-prefix", "blocking") in {(f["rule"], f["severity"]) for f in rep["findings"]}
    saved = json.loads((student / "audit.json").read_text())
    assert saved["target"] == "." and saved["verdict"] == "blocked"
    assert "name-prefix" in (student / "AUDIT.md").read_text()
    assert not (student / "README.md").exists()  # the trainer's model card is not overwritten
    manifest["name"] = "Llama-Acme-0.5B"
    (student / STUDENT_MANIFEST).write_text(json.dumps(manifest))
    r = CliRunner().invoke(app, ["audit", str(student), "--json"])
    assert r.exit_code == 0, r.stdout
    r = CliRunner().invoke(app, ["audit", str(student), "--release", "data"])
    assert r.exit_code == 2 and "only --release model applies" in r.output


def test_a_trainer_lineage_marker_is_audited_as_a_student(tmp_path):
    """A trainer writes distill-model.json listing its datasets (distill.training.lineage); the audit reads it."""
    from distill.cli.app import app

    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"]["options"]["license"] = "LicenseRef-Llama-3"
    pipeline(cfg).run()
    student = tmp_path / "student"
    student.mkdir()
    marker = {
        "model": "acme-sft",
        "license": "x",
        "base_model": {"id": "HuggingFaceTB/SmolLM2-135M", "license": "Apache-2.0"},
        "datasets": [{"name": "sft", "path": str(tmp_path / "out" / "export" / "sft")}],
    }
    (student / "distill-model.json").write_text(json.dumps(marker))
    r = CliRunner().invoke(app, ["audit", str(student), "--json", "--no-write"])
    rep = json.loads(r.stdout)
    assert r.exit_code == 1 and rep["release"]["name"] == "acme-sft" and rep["base_model_license"] == "Apache-2.0"
    assert ("no-improve-other-llm", "blocking", "LicenseRef-Llama-3") in {
        (f["rule"], f["severity"], f["license"]) for f in rep["findings"]
    }

    # Trained on clean data, but distilled from a Llama 3 teacher's token distributions: the
    # teacher is audited like a model that wrote the data, and named in the findings.
    (tmp_path / "clean").mkdir()
    clean = config_dict(tmp_path / "clean")
    pipeline(clean).run()
    marker["datasets"] = [{"name": "sft", "path": str(tmp_path / "clean" / "out" / "export" / "sft")}]
    marker["influences"] = [
        {"role": "teacher", "id": "meta-llama/Meta-Llama-3-8B-Instruct", "license": "LicenseRef-Llama-3"}
    ]
    (student / "distill-model.json").write_text(json.dumps(marker))
    rep = json.loads(CliRunner().invoke(app, ["audit", str(student), "--json", "--no-write"]).stdout)
    [f] = [f for f in rep["findings"] if f["rule"] == "no-improve-other-llm"]
    assert f["severity"] == "blocking" and f["records"] == 1
    assert f["examples"] == ["influence:teacher:meta-llama/Meta-Llama-3-8B-Instruct"]
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "distill-model.json").write_text(json.dumps({"model": "m", "license": "MIT"}))
    r = CliRunner().invoke(app, ["audit", str(tmp_path / "plain")])
    assert r.exit_code == 2 and "not a distill output folder" in r.output
