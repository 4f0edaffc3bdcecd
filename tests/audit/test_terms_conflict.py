"""A run whose teacher's declared terms contradict the model's own card: the run warns, the
records carry both, and the audit asks for an acknowledgement, which clears it when given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fake_plugins import EchoTeacher
from typer.testing import CliRunner
from util import config_dict, pipeline

from distill.audit.base import audit
from distill.audit.rules import make_rules
from distill.config.release import ReleaseSettings
from distill.hookspecs import hookimpl
from distill.io.store import read_shards
from distill.licenses import UNSPECIFIED, builtin_registry
from distill.records import Generator
from distill.teacher import ModelInfo
from distill.testing import make_record


class FolderEchoTeacher(EchoTeacher):
    """The echo teacher, pretending to run the weights in a local folder."""

    name = "folder-echo"

    class Options(EchoTeacher.Options):
        model: str = "."

    def model_info(self) -> ModelInfo:
        return ModelInfo(model=Path(self.options.model).name, revision="v1", license=UNSPECIFIED)


class Plugins:
    @hookimpl
    def register_teachers(self, register: Any) -> None:
        register(FolderEchoTeacher)


def _run(tmp_path: Path, license: str) -> tuple[Path, Any]:
    weights = tmp_path / "weights" / "acme-7b"
    weights.mkdir(parents=True)
    (weights / "README.md").write_text("---\nlicense: llama3.1\n---\n# acme-7b\n")
    cfg = config_dict(tmp_path)
    cfg["teachers"]["writer"] = {
        "plugin": "folder-echo",
        "options": {"n": 2, "model": str(weights), "license": license},
    }
    result = pipeline(cfg, ("folder", Plugins())).run()
    return tmp_path / "out", result


def _records(out: Path) -> list:
    d = out / "stages" / "sft"
    m = json.loads((d / "manifest.json").read_text())
    return list(read_shards(d, [s["kept_file"] for s in m["shards"]]))


def _audit(*args: Any) -> Any:
    from distill.cli.app import app

    return CliRunner().invoke(app, ["audit", *map(str, args), "--json", "--no-write", "--use", "research"])


def test_a_contradicted_declaration_is_recorded_and_needs_acknowledgement(tmp_path):
    out, result = _run(tmp_path, "Apache-2.0")
    (warning,) = [w for w in result.warnings if "the model says" in w]
    assert "teacher 'writer'" in warning and "LicenseRef-Llama-3.1" in warning and "terms-conflict" in warning
    writers = [g for r in _records(out) for g in r.provenance.generators if g.plugin == "folder-echo"]
    assert writers and all(g.license == "Apache-2.0" for g in writers)
    assert all(g.terms_source == "declared in teachers.writer.options.license" for g in writers)
    assert all(g.model_says and g.model_says.startswith("LicenseRef-Llama-3.1 (model card") for g in writers)

    r = _audit(out)
    assert r.exit_code == 1, r.stdout
    rep = json.loads(r.stdout)
    (f,) = [f for f in rep["findings"] if f["rule"] == "terms-conflict"]
    assert f["severity"] == "acknowledge" and f["license"] == "Apache-2.0" and f["records"] == len(_records(out))
    assert "acme-7b was declared Apache-2.0, but the model itself says LicenseRef-Llama-3.1" in f["message"]
    r = _audit(out, "--ack", "terms-conflict=a separate agreement with the weights' owner")
    assert r.exit_code == 0, r.stdout
    assert json.loads(r.stdout)["acknowledgements"][0]["rule"] == "terms-conflict"


def test_undeclared_terms_come_from_the_models_card_and_say_so(tmp_path):
    out, result = _run(tmp_path, UNSPECIFIED)
    assert not [w for w in result.warnings if "the model says" in w or "terms are unknown" in w and "writer" in w]
    writers = [g for r in _records(out) for g in r.provenance.generators if g.plugin == "folder-echo"]
    assert writers and all(g.license == "LicenseRef-Llama-3.1" and g.model_says is None for g in writers)
    assert all(g.terms_source.startswith("model card front matter license: llama3.1") for g in writers)
    rep = json.loads(_audit(out).stdout)
    assert not [f for f in rep["findings"] if f["rule"] == "terms-conflict"]
    card = (out / "export" / "sft" / "README.md").read_text()
    assert "| terms found by |" in card and "model card front matter license: llama3.1" in card


def _audit_records(*generators: Generator):
    recs = []
    for i, g in enumerate(generators):
        r = make_record(f"q{i}", f"a{i}", id=f"r{i}", dataset="seeds", license="CC0-1.0", row=i)
        r.add_generator(g)
        recs.append(r)
    return audit(recs, ReleaseSettings(use="research"), builtin_registry(), make_rules(), target="t")


def test_terms_an_older_registry_gave_are_questioned_when_the_registry_now_disagrees():
    old = Generator(plugin="vllm", model="Qwen/Qwen2.5-Math-7B", license="Apache-2.0")  # 0.1: no terms_source
    still = Generator(plugin="vllm", model="Qwen/Qwen2.5-7B-Instruct", license="Apache-2.0")
    declared = old.model_copy(update={"terms_source": "declared in teachers.w.options.license"})
    api = Generator(
        plugin="openai", model="gpt-4o", license="LicenseRef-OpenAI-Terms", terms_source="registry rule gpt-*"
    )
    rep = _audit_records(old, still, declared, api)
    (f,) = [f for f in rep.findings if f.rule == "registry-changed"]
    assert f.severity == "acknowledge" and f.examples == ["r0"] and f.license == "Apache-2.0"
    assert "recorded before distill said how" in f.message and "unknown, probably a qwen model" in f.message
    rule = Generator(plugin="vllm", model="deepseek-ai/DeepSeek-R1-Distill-Llama-8B", license="MIT")
    rule = rule.model_copy(update={"terms_source": "registry rule deepseek-ai/DeepSeek-R1*"})
    (f,) = [f for f in _audit_records(rule).findings if f.rule == "registry-changed"]
    assert "says MIT AND LicenseRef-Llama-3.1" in f.message
