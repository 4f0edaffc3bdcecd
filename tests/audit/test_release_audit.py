"""`distill audit OUT` audits everything the run would release: every export and every trained
student, one verdict each and an overall one; `--stage` narrows it; an empty export is not
cleared."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner
from util import config_dict, pipeline

from distill.layout import MODEL_MARKER, STUDENT_MANIFEST
from distill.licenses import tag_for


def _cli(*args):
    from distill.cli.app import app

    return CliRunner().invoke(app, ["audit", *map(str, args)])


def _two_exports(tmp_path: Path, **over) -> Path:
    cfg = config_dict(tmp_path, **over)
    cfg["stages"].append({"kind": "export", "name": "prefs", "format": "sft"})
    pipeline(cfg).run()
    return tmp_path / "out"


def _student(out: Path, steps: list[tuple[str, str]], base_license: str = "Apache-2.0") -> Path:
    """A train stage's output as the trainers leave it: one folder per step, each with its
    marker; the last step's lists its own export, the lineage names the earlier ones."""
    lineage = []
    folder = out
    tag = tag_for("Apache-2.0 AND CC0-1.0").model_dump(mode="json")
    base = {
        "id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "revision": "1",
        "file_hash": "0" * 64,
        "license": base_license,
    }
    for step, export in steps:
        lineage.append({"step": step, "trainer": step, "model": "acme-support", "datasets": [{"name": export}]})
        folder = out / "models" / "student" / step
        folder.mkdir(parents=True)
        marker = {
            "model": "acme-support",
            "license": "Apache-2.0 AND CC0-1.0",
            "license_tag": tag,
            "base_model": base,
            "parent": base,
            "kind": "model",
            "trainer": {"name": step, "version": "0.0", "libraries": {}},
            "datasets": [
                {
                    "name": export,
                    "path": str(out / "export" / export),
                    "rows": 1,
                    "digest": "0" * 64,
                    "license_tag": tag,
                }
            ],
            "influences": [],
            "options": {},
            "global_step": 1,
            "metrics": {},
            "hardware": {},
            "resumed_from": None,
            "lineage": list(lineage),
        }
        (folder / MODEL_MARKER).write_text(json.dumps(marker))
    return folder


def test_a_run_folder_audits_every_export_and_the_student(tmp_path):
    out = _two_exports(tmp_path)
    final = _student(out, [("sft", "sft"), ("dpo", "prefs")])
    r = _cli(out, "--json", "--no-write")
    assert r.exit_code == 0, r.stdout
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "cleared" and rep["exit_code"] == 0
    labels = [a["artefact"] for a in rep["artefacts"]]
    assert labels == ["export sft", "export prefs", "student dpo (acme-support)"]
    assert all(a["verdict"] == "cleared" for a in rep["artefacts"])
    sft, prefs, student = rep["artefacts"]
    assert (sft["stage"], prefs["stage"], student["kind"]) == ("sft", "prefs", "student")
    # the student was fine-tuned on sft before its DPO step on prefs: both are in its verdict
    assert student["records"] == sft["records"] + prefs["records"] and student["release"]["what"] == "model"
    assert student["target"] == str(final)

    table = _cli(out, "--no-write")
    assert "the release" in table.stdout and "overall verdict: cleared" in table.stdout
    md = _cli(out, "--format", "markdown", "--no-write").stdout
    assert md.startswith("# License audit of a release: cleared") and "| export prefs |" in md


def test_the_worst_artefact_decides_and_each_is_recorded(tmp_path):
    out = _two_exports(tmp_path)
    _student(out, [("sft", "sft")], base_license="LicenseRef-Unspecified")
    r = _cli(out, "--json")
    assert r.exit_code == 1
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "blocked" and [a["verdict"] for a in rep["artefacts"]] == ["cleared", "cleared", "blocked"]
    # each export's audit saved apart (the config names no release, so each is named by its stage)
    assert {p.name for p in (out / "audits").glob("*.json")} == {
        "data-commercial-sft.json",
        "data-commercial-prefs.json",
    }
    assert (out / "models" / "student" / "sft" / "audit.json").is_file()
    assert "because of student sft" in _cli(out, "--no-write").stdout


def test_release_and_stage_narrow_what_is_audited(tmp_path):
    out = _two_exports(tmp_path)
    _student(out, [("sft", "sft")])
    data = json.loads(_cli(out, "--json", "--no-write", "--release", "data").stdout)
    assert [a["artefact"] for a in data["artefacts"]] == ["export sft", "export prefs"]
    model = json.loads(_cli(out, "--json", "--no-write", "--release", "model").stdout)  # one artefact: its report
    assert model["kind"] == "student" and model["release"]["what"] == "model"
    one = json.loads(_cli(out, "--json", "--no-write", "--stage", "prefs").stdout)
    assert one["stage"] == "prefs" and "artefacts" not in one


def test_an_empty_export_is_not_cleared(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"][2]["filters"] = [{"plugin": "length", "options": {"min_words": 10_000}}]
    pipeline(cfg).run()
    r = _cli(tmp_path / "out", "--json", "--no-write")
    assert r.exit_code == 1, r.stdout
    rep = json.loads(r.stdout)
    assert rep["records"] == 0 and rep["verdict"] == "blocked"
    (f,) = [f for f in rep["findings"] if f["rule"] == "empty-release"]
    assert f["severity"] == "blocking" and "nothing to release" in f["message"]


def _with_empty_prefs(tmp_path: Path) -> Path:
    """`sft` exported from the clean records, then `prefs` after a filter that keeps none."""
    cfg = config_dict(tmp_path)
    cfg["stages"] += [
        {"kind": "filter", "name": "none", "filters": [{"plugin": "length", "options": {"min_words": 10_000}}]},
        {"kind": "export", "name": "prefs", "format": "sft"},
    ]
    pipeline(cfg).run()
    return tmp_path / "out"


def test_an_empty_export_blocks_the_release_of_the_run(tmp_path):
    out = _with_empty_prefs(tmp_path)
    r = _cli(out, "--json", "--no-write")
    assert r.exit_code == 1, r.stdout
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "blocked" and rep["exit_code"] == 1
    sft, prefs = rep["artefacts"]
    assert (sft["artefact"], sft["verdict"]) == ("export sft", "cleared") and sft["records"] > 0
    assert (prefs["artefact"], prefs["verdict"], prefs["records"]) == ("export prefs", "blocked", 0)
    (f,) = [f for f in prefs["findings"] if f["rule"] == "empty-release"]
    assert f["message"] == "nothing to release: the export has no records" and f["fix"]
    # the table: a section per artefact, then the summary with kinds and the culprit
    table = _cli(out, "--no-write").stdout
    assert table.index("export sft") < table.index("export prefs") < table.index("the release")
    assert "kind" in table and "overall verdict: blocked" in table and "because of export prefs" in table
    # narrowed to the export that has records, the release is cleared
    assert _cli(out, "--stage", "sft", "--no-write").exit_code == 0


def test_a_student_trained_on_no_records_is_not_cleared(tmp_path):
    """Its teacher's influence is a record of the audit, but not data it was trained on."""
    out = _with_empty_prefs(tmp_path)
    folder = tmp_path / "distilled"
    folder.mkdir()
    manifest = {
        "name": "acme-support",
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "base_model_license": "Apache-2.0",
        "datasets": [str(out / "export" / "prefs")],
        "influences": [{"role": "teacher", "id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "Apache-2.0"}],
    }
    (folder / STUDENT_MANIFEST).write_text(json.dumps(manifest))
    r = _cli(folder, "--json", "--no-write")
    assert r.exit_code == 1, r.stdout
    rep = json.loads(r.stdout)
    assert rep["kind"] == "student" and rep["records"] == 1 and rep["verdict"] == "blocked"
    (f,) = [f for f in rep["findings"] if f["rule"] == "empty-release"]
    assert f["message"] == "nothing to release: the student was trained on no records"


def test_a_merged_student_is_named_by_its_step_and_both_cards_are_recorded(tmp_path):
    out = _two_exports(tmp_path)
    step = _student(out, [("sft", "sft")])
    (step / "merged").mkdir()
    (step / "merged" / MODEL_MARKER).write_text((step / MODEL_MARKER).read_text())
    r = _cli(out, "--json", "--output", tmp_path / "release.json")
    assert r.exit_code == 0, r.stdout
    rep = json.loads(r.stdout)
    assert [a["artefact"] for a in rep["artefacts"]] == ["export sft", "export prefs", "student sft (acme-support)"]
    assert rep["artefacts"][2]["target"] == str(step / "merged")
    assert json.loads((tmp_path / "release.json").read_text()) == rep  # --output writes the same
    for folder in (step, step / "merged"):
        assert json.loads((folder / "audit.json").read_text())["verdict"] == "cleared"
    md = _cli(out, "--format", "markdown", "--no-write").stdout
    assert "| student sft (acme-support) | model |" in md and "| export sft | data |" in md


def test_a_run_with_nothing_to_release_audits_its_last_stage_and_says_so(tmp_path):
    cfg = config_dict(tmp_path)
    cfg["stages"] = cfg["stages"][:-1]  # no export
    pipeline(cfg).run()
    r = _cli(tmp_path / "out", "--json", "--no-write")
    rep = json.loads(r.stdout)  # one artefact: the single report, as before
    assert rep["stage"] == "clean" and "artefacts" not in rep and r.exit_code == rep["exit_code"]
    assert any("nothing to release yet" in w for w in rep["warnings"]), rep["warnings"]
