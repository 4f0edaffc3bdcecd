"""The `train` stage: a config's own exports train a student; its card carries the audit.

Fast tests check the config (data that names no export, a trainer that cannot read the
export's format, unknown trainers and TRL keys); slow tests train a tiny Llama for real
inside a pipeline, in one process and under `accelerate launch` with two.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from conftest import require_ml
from typer.testing import CliRunner
from util import config_dict, pipeline, registry

from distill.config.loader import parse_config, validate_plugin_options
from distill.errors import ConfigError

pytestmark = pytest.mark.slow  # trains real models

FAST = {"batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 100}


def _cfg(tmp_path, student="embedded", steps=None, **stage):
    """Seeds -> questions -> two answers each -> rank -> sft and preference exports -> train."""
    cfg = config_dict(tmp_path)
    cfg["stages"] = cfg["stages"][:2] + [
        {
            "kind": "rank",
            "name": "rank",
            "ranker": {"plugin": "reward-function", "options": {"function": "reward_fns:prefers_short"}},
        },
        {"kind": "export", "name": "sft", "format": "sft"},
        {"kind": "export", "name": "prefs", "format": "preference"},
        {
            "kind": "train",
            "name": "student",
            "student": str(student),
            "student_license": "Apache-2.0",
            "model_name": "acme-student",
            "steps": steps
            or [
                {"trainer": "sft", "data": "sft", "options": {**FAST, "max_steps": 3}},
                {"trainer": "dpo", "data": ["prefs"], "options": {**FAST, "max_steps": 2, "lora": {"r": 4}}},
            ],
            **stage,
        },
    ]
    return cfg


def _errors(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate_plugin_options(parse_config(cfg), registry())
    return str(err.value)


# ----------------------------------------------------------------------------- config


def test_train_data_must_name_an_earlier_export_of_a_format_the_trainer_reads(tmp_path):
    cfg = _cfg(
        tmp_path,
        steps=[
            {"trainer": "sft", "data": "sfft"},
            {"trainer": "dpo", "data": "sft"},
            {"trainer": "reward-model", "data": "responses"},
        ],
    )
    message = _errors(cfg)
    assert "stages[5].steps[0].data[0]: 'sfft' is not an export stage before this one" in message
    assert "(did you mean 'sft'?)" in message
    assert "stages[5].steps[1].data[0]: the dpo trainer reads preference exports; 'sft' is a sft export" in message
    assert "stages[5].steps[2].data[0]: 'responses' is not an export stage" in message
    cfg = _cfg(tmp_path)
    cfg["stages"].insert(3, cfg["stages"].pop(5))  # training before its exports exist
    assert "'sft' is not an export stage before this one (export stages so far: none)" in _errors(cfg)


def test_unknown_trainer_and_trl_key_are_named(tmp_path):
    cfg = _cfg(
        tmp_path,
        steps=[
            {"trainer": "sftt", "data": "sft"},
            {"trainer": "dpo", "data": "prefs", "options": {"trl_args": {"beta_": 0.1}}},
        ],
    )
    message = _errors(cfg)
    assert "stages[5].steps[0].trainer:" in message and "'sft'" in message  # the known trainers are listed
    if importlib.util.find_spec("trl") is not None:
        assert "stages[5].steps[1].options.trl_args" in message and "did you mean 'beta'" in message


@pytest.mark.parametrize(
    "steps, expected",
    [
        ([{"trainer": "sft", "data": "sft"}, {"trainer": "sft", "data": "sft"}], None),  # named sft-0, sft-1
        (
            [{"name": "a", "trainer": "sft", "data": "sft"}, {"name": "a", "trainer": "dpo", "data": "prefs"}],
            "duplicate step name 'a'",
        ),
        (
            [{"trainer": "sft", "data": "sft", "student": "dpo"}, {"trainer": "dpo", "data": "prefs"}],
            "not an earlier step",
        ),
        ([{"name": "../x", "trainer": "sft", "data": "sft"}], "must be letters"),
    ],
)
def test_step_names(tmp_path, steps, expected):
    cfg = _cfg(tmp_path, steps=steps)
    if expected is None:
        assert [s.name for s in parse_config(cfg).config.stages[5].steps] == ["sft-0", "sft-1"]
    else:
        with pytest.raises(ConfigError, match=expected):
            parse_config(cfg)


def test_student_license_is_checked(tmp_path):
    cfg = _cfg(tmp_path, student_license="Apache2")
    assert "stages[5].student_license" in _errors(cfg) and "Apache-2.0" in _errors(cfg)


# ----------------------------------------------------------------------------- training


def _need_train() -> None:
    require_ml()
    for module in ("trl", "peft", "datasets", "accelerate"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed (pip install 'distill[train]')")


def _front(text: str) -> dict:
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


@pytest.mark.slow
def test_a_run_trains_its_student_audits_it_and_cards_it(tmp_path, tiny_model_dir):
    _need_train()
    from distill.cli.app import app

    cfg = _cfg(tmp_path, tiny_model_dir)
    cfg["seeds"][0]["license"] = "CC-BY-NC-4.0"
    cfg["release"] = {"use": "research"}
    result = pipeline(cfg).run()
    [student] = result.students
    out = tmp_path / "out" / "models" / "student"
    assert [s for s, _ in student.steps] == ["sft", "dpo"]
    assert [r.global_step for _, r in student.steps] == [3, 2] and not any(r.skipped for _, r in student.steps)
    assert student.path == out / "dpo" and (out / "dpo" / "adapter_model.safetensors").is_file()
    assert student.verdict == "cleared", student.report.findings
    marker = json.loads((out / "dpo" / "distill-model.json").read_text())
    assert marker["model"] == "acme-student" and marker["license"] == "Apache-2.0 AND CC-BY-NC-4.0"
    assert [d["path"] for d in marker["datasets"]] == [str((tmp_path / "out" / "export" / "prefs").resolve())]
    assert marker["datasets"][0]["license_declared"]  # read from the export's distill-dataset.json

    card = (out / "dpo" / "README.md").read_text()
    meta = _front(card)
    assert meta["base_model"] == "distill-tiny-llama" and meta["base_model_relation"] == "adapter"
    assert meta["license"] == "other" and meta["license_expression"] == "Apache-2.0 AND CC-BY-NC-4.0"
    assert meta["datasets"] == ["prefs"] and "dpo" in meta["tags"]
    assert "**Verdict: cleared**" in card and "## Lineage" in card and "Not legal advice" in card
    assert str(tmp_path) not in card  # no local paths in what gets published
    assert (out / "dpo" / "NOTICE").is_file() and json.loads((out / "dpo" / "audit.json").read_text())[
        "verdict"
    ] == "cleared"
    assert "Not audited yet" in (out / "sft" / "README.md").read_text()  # an intermediate step

    weights = (out / "dpo" / "adapter_model.safetensors").stat().st_mtime_ns
    again = pipeline(cfg).run()
    assert all(r.skipped for _, r in again.students[0].steps)
    assert (out / "dpo" / "adapter_model.safetensors").stat().st_mtime_ns == weights

    # A commercial release of a student of non-commercial data: the card and `distill audit` say
    # so, and nothing is retrained (the policy is not part of what was trained).
    cfg["release"] = {"use": "commercial"}
    blocked = pipeline(cfg).run()
    assert all(r.skipped for _, r in blocked.students[0].steps)
    assert blocked.students[0].verdict == "blocked" and any("train 'student'" in w for w in blocked.warnings)
    assert "**Verdict: blocked**" in (out / "dpo" / "README.md").read_text()
    done = CliRunner().invoke(app, ["audit", str(out / "dpo")])
    assert done.exit_code == 1 and "blocked" in done.output


@pytest.mark.slow
def test_a_run_trains_under_accelerate_with_two_processes(tmp_path, tiny_model_dir, monkeypatch):
    _need_train()
    monkeypatch.setenv("DISTILL_TEST_RUN_NAME", "canary-3d1f")
    steps = [
        {
            "trainer": "sft",
            "data": "sft",
            "options": {**FAST, "max_steps": 4, "trl_args": {"run_name": "${DISTILL_TEST_RUN_NAME}"}},
        }
    ]
    cfg = _cfg(tmp_path, tiny_model_dir, steps=steps, processes=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = pipeline(cfg).run()
    [(name, r)] = result.students[0].steps
    assert name == "sft" and r.global_step == 4 and not r.skipped
    out = tmp_path / "out" / "models" / "student"
    job = (out / "job.json").read_text()
    assert "${DISTILL_TEST_RUN_NAME}" in job and "canary-3d1f" not in job  # placeholders, never values
    marker = json.loads((out / "sft" / "distill-model.json").read_text())
    assert marker["hardware"]["processes"] == 2 and result.students[0].verdict == "cleared"


@pytest.mark.slow
def test_a_student_of_changed_data_is_set_aside_and_trained_again(tmp_path, tiny_model_dir):
    _need_train()
    cfg = _cfg(tmp_path, tiny_model_dir, steps=[{"trainer": "sft", "data": "sft", "options": {**FAST, "max_steps": 2}}])
    first = pipeline(cfg).run().students[0]
    out = tmp_path / "out"
    old = json.loads((out / "models" / "student" / "sft" / "distill-model.json").read_text())
    cfg["stages"][0]["task"]["options"]["num_instructions"] = 3  # fewer questions, so another export
    again = pipeline(cfg).run().students[0]
    assert not again.steps[0][1].skipped and first.path == again.path
    [aside] = (out / "stale" / "models").iterdir()
    assert aside.name.startswith("student.sft-")
    assert json.loads((aside / "distill-model.json").read_text())["fingerprint"] == old["fingerprint"]
    new = json.loads((out / "models" / "student" / "sft" / "distill-model.json").read_text())
    assert new["fingerprint"] != old["fingerprint"]


@pytest.mark.slow
def test_a_trainer_crash_is_named_and_the_data_stays(tmp_path, tiny_model_dir):
    _need_train()
    from distill.errors import PluginError

    steps = [{"trainer": "sft", "data": "sft", "options": {**FAST, "max_steps": 1, "trl_args": {"optim": "nope"}}}]
    cfg = _cfg(tmp_path, tiny_model_dir, steps=steps)
    with pytest.raises((PluginError, ConfigError), match="sft"):
        pipeline(cfg).run()
    assert (tmp_path / "out" / "export" / "sft").is_dir()  # every data stage before it is committed


def test_a_student_that_does_not_exist_is_named(tmp_path):
    from distill.errors import PluginError

    if importlib.util.find_spec("datasets") is None:
        pytest.skip("datasets not installed: the export stages cannot run")
    cfg = _cfg(tmp_path, student=tmp_path / "missing-model")
    with pytest.raises(PluginError, match=r"sft trainer: student model folder .*missing-model does not exist"):
        pipeline(cfg).run()
    assert (tmp_path / "out" / "export" / "prefs" / "README.md").is_file()  # the data stages are committed
