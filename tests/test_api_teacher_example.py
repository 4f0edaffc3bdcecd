"""examples/api_teacher: the quickstart's Acme Support task with the OpenAI-compatible teacher.

The fast tests check the config as shipped (it validates with only the key in the environment,
the teachers' terms resolve to OpenAI's at OpenAI and to what is declared elsewhere, no task
asks for an assistant prefill OpenAI would reject, and `run.json` keeps the `${...}`
placeholders). The slow test runs the example for real, through the CLI, against the session's
vLLM server behind a proxy that demands the key, up to the train stage.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.config.loader import load_config, validate_plugin_options
from distill.registry import make_registry

pytest.importorskip("openai")

from distill_plugins.teachers.openai import OPENAI_URL, OpenAITeacher

pytestmark = pytest.mark.slow  # runs the example against a real server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIG = EXAMPLES / "api_teacher" / "config.yaml"
SECRET = "sk-example-DO-NOT-LEAK-7c3e9b1d5a"
ENV_VARS = ("OPENAI_BASE_URL", "OPENAI_MODEL", "TEACHER_LICENSE", "OPENAI_API_KEY")
STAGES = ["seeds", "questions", "new-questions", "answers", "ranked", "clean", "sft", "prefs"]
TEACHERS = ("writer", "inventor", "judge")


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Only the key set (as a user of OpenAI would have it), and a cache of the test's own."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def copy_examples(dest: Path) -> Path:
    """The example beside the quickstart it borrows from (`../quickstart/...`), without outputs."""
    ignore = shutil.ignore_patterns("out", "__pycache__")
    for name in ("quickstart", "api_teacher"):
        shutil.copytree(EXAMPLES / name, dest / name, ignore=ignore)
    return dest / "api_teacher" / "config.yaml"


def terms_of(loaded, validated, key: str):
    from distill.models.terms import resolve_terms

    teacher = OpenAITeacher(validated[f"teachers.{key}"])
    info = teacher.model_info()
    return resolve_terms(
        key=key,
        plugin=teacher.name,
        options=teacher.options,
        reported=info.license,
        model=info.model,
        config_models=loaded.config.models,
        reg=loaded.license_registry(),
        base_dir=loaded.base_dir,
    )


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


# -- the config as shipped -------------------------------------------------------------------


def test_config_validates_with_only_the_key_set_and_defaults_to_openai(env):
    loaded = load_config(CONFIG)
    validated = validate_plugin_options(loaded, make_registry())
    cfg = loaded.config
    assert [s.name for s in cfg.stages] == STAGES[1:] + ["student", "eval"]
    assert [s.kind for s in cfg.stages] == [
        "generate",
        "filter",
        "generate",
        "rank",
        "filter",
        "export",
        "export",
        "train",
        "evaluate",
    ]
    for key in TEACHERS:
        assert cfg.teachers[key].plugin == "openai"
        o = validated[f"teachers.{key}"]
        assert (o.base_url, o.model, o.api_key_env) == (OPENAI_URL, "gpt-4o-mini", "OPENAI_API_KEY")
        assert o.concurrency >= 1 and o.max_total_tokens and o.max_cost_usd
        assert o.price_per_1k_prompt is not None and o.price_per_1k_completion is not None
        # The raw config holds placeholders only; the key is in no option at all.
        raw = loaded.raw["teachers"][key]["options"]
        assert raw["base_url"] == "${OPENAI_BASE_URL:-https://api.openai.com/v1}"
        assert raw["model"] == "${OPENAI_MODEL:-gpt-4o-mini}"
        assert SECRET not in json.dumps(raw) and SECRET not in o.model_dump_json()
    assert validated["teachers.writer"].n == 4  # the rubric ranks four candidates
    stages = {s.name: s for s in cfg.stages}
    assert stages["answers"].teacher == "writer" and stages["questions"].teacher == "inventor"
    assert {c.name: c.teacher for c in stages["eval"].contenders}["teacher"] == "writer"
    judge = next(e for e in stages["eval"].evaluators if e.plugin == "judge-win-rate")
    assert judge.options["judge"] == "judge"
    # The quickstart's files, by relative path, exist where the config says.
    base = loaded.base_dir
    assert (base / cfg.seeds[0].path).resolve() == (EXAMPLES / "quickstart" / "seeds.jsonl").resolve()
    decon = next(f for f in stages["new-questions"].filters if f.plugin == "decontamination")
    assert (base / decon.options["eval_sets"][0]["path"]).resolve().is_file()
    assert (base / stages["eval"].data.path).resolve() == (EXAMPLES / "quickstart" / "heldout.jsonl").resolve()
    rubric = stages["ranked"].ranker.options["function"]
    assert rubric == "../quickstart/acme_rubric.py:score" and (base / rubric.split(":")[0]).is_file()

    # The key is only needed when a teacher starts, never to check the config.
    env.delenv("OPENAI_API_KEY")
    validate_plugin_options(load_config(CONFIG), make_registry())

    # What an editor checks it against (the file says so), YAML merge keys resolved.
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is an optional test dependency")
    schema = json.loads((EXAMPLES.parent / "schemas" / "config.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(CONFIG.read_text()), schema)


def test_teacher_terms_are_openais_at_openai_and_declared_elsewhere(env):
    from distill.licenses import UNSPECIFIED

    loaded = load_config(CONFIG)
    validated = validate_plugin_options(loaded, make_registry())
    for key in TEACHERS:
        terms = terms_of(loaded, validated, key)
        assert terms.license == "LicenseRef-OpenAI-Terms" and terms.how.startswith("config models[0]"), terms
    info = loaded.license_registry().info("LicenseRef-OpenAI-Terms")
    assert info.use == "commercial" and info.restriction == "no-competing-models" and info.acceptable_use_policy

    # Any model OpenAI serves, not only the names the built-in rules know.
    env.setenv("OPENAI_MODEL", "some-future-model")
    loaded = load_config(CONFIG)
    assert (
        terms_of(loaded, validate_plugin_options(loaded, make_registry()), "writer").license
        == "LicenseRef-OpenAI-Terms"
    )

    # A server of one's own: unknown unless declared, and never OpenAI's terms.
    env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    env.setenv("OPENAI_MODEL", "my-model")
    loaded = load_config(CONFIG)
    assert terms_of(loaded, validate_plugin_options(loaded, make_registry()), "writer").license == UNSPECIFIED
    env.setenv("OPENAI_MODEL", "HuggingFaceTB/SmolLM2-1.7B-Instruct")  # the registry's rules still apply
    loaded = load_config(CONFIG)
    assert terms_of(loaded, validate_plugin_options(loaded, make_registry()), "writer").license == "Apache-2.0"
    env.setenv("TEACHER_LICENSE", "LicenseRef-Llama-3.1")
    loaded = load_config(CONFIG)
    terms = terms_of(loaded, validate_plugin_options(loaded, make_registry()), "judge")
    assert terms.license == "LicenseRef-Llama-3.1" and "declared" in terms.how


def test_no_request_asks_openai_for_an_assistant_prefill(env):
    """OpenAI's API rejects `continue_final_message`: the answers must not end in an assistant turn."""
    from distill.records import Message, Record
    from distill_plugins.tasks import ResponseTask

    loaded = load_config(CONFIG)
    validated = validate_plugin_options(loaded, make_registry())
    i = next(i for i, s in enumerate(loaded.config.stages) if s.name == "answers")
    task = ResponseTask(validated[f"stages[{i}].task"])
    assert task.options.prefix is None and task.options.system_prompt.startswith("You are Acme Support")
    record = Record(id="q1", messages=[Message(role="user", content="How do I reset my Acme router?")])
    messages = task.build(record)
    assert [m.role for m in messages] == ["system", "user"]
    from distill.teacher import ChatRequest

    kwargs = OpenAITeacher(validated["teachers.writer"])._kwargs(ChatRequest(messages=messages), 4, 1)
    assert "extra_body" not in kwargs and kwargs["n"] == 4


def test_run_json_keeps_the_placeholders(env, tmp_path):
    from distill.pipeline import Pipeline

    config = copy_examples(tmp_path / "examples")
    env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    env.setenv("OPENAI_MODEL", "acme-teacher-model")
    env.setenv("TEACHER_LICENSE", "Apache-2.0")
    result = Pipeline(load_config(config), make_registry(), progress=False, log=lambda m: None).run(until="questions")
    assert [s.stage for s in result.stages] == ["seeds"]  # no teacher was started
    out = config.parent / "out"
    text = (out / "run.json").read_text()
    raw = json.loads(text)["config"]
    for key in TEACHERS:
        options = raw["teachers"][key]["options"]
        assert options["base_url"] == "${OPENAI_BASE_URL:-https://api.openai.com/v1}"
        assert options["model"] == "${OPENAI_MODEL:-gpt-4o-mini}"
        assert options["license"] == "${TEACHER_LICENSE:-LicenseRef-Unspecified}"
        assert options["api_key_env"] == "OPENAI_API_KEY"
    for value in ("127.0.0.1:9", "acme-teacher-model", SECRET):
        assert value not in text
    for path in files_under(out):
        assert SECRET.encode() not in path.read_bytes(), path


# -- the example, run for real ---------------------------------------------------------------


def read_stage(out: Path, stage: str) -> tuple[list, list]:
    from distill.io.store import read_shards

    d = out / "stages" / stage
    shards = json.loads((d / "manifest.json").read_text())["shards"]
    kept = list(read_shards(d, [s["kept_file"] for s in shards]))
    rejected = list(read_shards(d, [s["rejected_file"] for s in shards if (d / s["rejected_file"]).is_file()]))
    return kept, rejected


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.slow
def test_example_runs_against_a_real_openai_compatible_server(vllm_server, tmp_path):
    import os

    from servers import FaultProxy

    from distill.layout import CARD_FILES

    datasets = pytest.importorskip("datasets", reason="the exports need the `datasets` extra")
    config = copy_examples(tmp_path / "examples")
    out, cache = config.parent / "out", tmp_path / "cache"
    base_url, model = vllm_server
    # The proxy answers 401 to any other key, as OpenAI does: the key must travel from the
    # environment to the server on every request, and nowhere else.
    with FaultProxy(base_url, require_key=SECRET, lifetime=3600) as proxy:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": proxy.base_url,
            "OPENAI_MODEL": model,
            "OPENAI_API_KEY": SECRET,
            # Stands in for OpenAI's terms, which a model at api.openai.com gets from the config's rule.
            "TEACHER_LICENSE": "LicenseRef-OpenAI-Terms",
            "DISTILL_CACHE_DIR": str(cache),
        }
        run = cli("run", str(config), "--until", "student", "--quiet", env=env, timeout=1800)
        assert run.returncode == 0, run.stdout + run.stderr
    assert proxy.stats.forwarded > 0 and not proxy.stats.faults, proxy.stats.faults
    assert SECRET not in run.stdout + run.stderr

    inspect = cli("inspect", str(out), "--json")
    assert inspect.returncode == 0, inspect.stdout + inspect.stderr
    reports = {r["stage"]: r for r in json.loads(inspect.stdout)}
    assert list(reports) == STAGES  # nothing trained or evaluated: --until stops before `student`
    for r in reports.values():
        assert r["complete"] and r["balanced"] and r["damaged"] is None, r
    assert reports["questions"]["totals"]["generated"] > 0
    assert not (out / "models").exists() and not (out / "eval").exists()

    # Every model that wrote part of a record is the served model, through the openai plugin,
    # under the declared terms, with its teacher's sampling.
    writers: dict[str, int] = {}
    for stage in STAGES:
        for rec in [r for part in read_stage(out, stage) for r in part]:
            for g in rec.provenance.generators:
                assert (g.plugin, g.model, g.license) == ("openai", model, "LicenseRef-OpenAI-Terms"), g
                assert g.file_hash is None and g.sampling["temperature"] in (0.9, 1.0), g
                writers[stage] = writers.get(stage, 0) + 1
            if rec.provenance.generators:
                assert "LicenseRef-OpenAI-Terms" in rec.provenance.license.expression
    assert writers.get("questions"), "no generated question records"
    answered = [r for r in read_stage(out, "answers")[0] if r.candidates]
    assert answered, "no question was answered by the API teacher"
    for rec in answered:
        assert len(rec.candidates) == 4  # n: 4 in one request
        gens = rec.provenance.generators
        assert {g.sampling.get("n") for g in gens} >= {4} and len({g.sampling.get("temperature") for g in gens}) == 2
    for rec in read_stage(out, "ranked")[0]:
        if rec.candidates:
            assert all(c.score is not None for c in rec.candidates)

    # The exports, with their cards.
    for name in ("sft", "prefs"):
        folder = out / "export" / name
        for card in CARD_FILES:
            assert (folder / card).is_file(), folder / card
        ds = datasets.load_from_disk(str(folder))
        assert len(ds) == reports[name]["totals"]["kept"]
    assert reports["sft"]["totals"]["kept"] > 0

    # What the audit says about OpenAI's terms, for data the API teacher wrote.
    audit = cli("audit", str(out), "--stage", "answers", "--json", "--no-write")
    assert audit.returncode == 1, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert report["verdict"] == "needs-acknowledgement"
    rules = {(f["rule"], f["license"], f["severity"]) for f in report["findings"]}
    assert ("no-competing-models", "LicenseRef-OpenAI-Terms", "acknowledge") in rules
    assert ("acceptable-use", "LicenseRef-OpenAI-Terms", "info") in rules
    acked = cli(
        "audit",
        str(out),
        "--stage",
        "answers",
        "--json",
        "--no-write",
        "--ack",
        "no-competing-models=the student does not compete with OpenAI",
    )
    assert acked.returncode == 0 and json.loads(acked.stdout)["verdict"] == "cleared", acked.stdout + acked.stderr

    # The key is in no file the run wrote: output (records, manifests, state, cards) or cache.
    assert (cache / "requests.sqlite").is_file()
    scanned = files_under(out, cache)
    assert len(scanned) > 20
    for path in scanned:
        assert SECRET.encode() not in path.read_bytes(), path
    raw = json.loads((out / "run.json").read_text())["config"]
    assert raw["teachers"]["writer"]["options"]["base_url"] == "${OPENAI_BASE_URL:-https://api.openai.com/v1}"
