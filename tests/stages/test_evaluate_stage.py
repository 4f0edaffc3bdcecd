"""The `evaluate` stage: contenders answer a held-out set through the cache; evaluators score them.

Fast tests use the deterministic echo teacher (answers, and a judge that prefers the longer
answer); the slow one trains a tiny Llama inside the pipeline and measures it against its
untrained base with the real transformers engine and perplexity.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import require_ml
from fake_plugins import EchoTeacher
from util import config_dict, pipeline, registry

from distill.config.loader import parse_config, validate_plugin_options
from distill.errors import ConfigError, PluginError

pytestmark = pytest.mark.slow  # answers with real models

HELD_OUT = [
    ("How do I change my router's Wi-Fi password?", "Answer: open the admin page", "on"),
    ("Why does my 5 GHz network keep dropping?", "Answer: move the router higher", "on"),
    ("Who won the football world cup in 1998?", "Answer: let's keep to routers", "off"),
    ("Give me a recipe for banana bread.", "Answer: let's keep to routers", "off"),
]


def _held_out(tmp_path, bad_line: bool = False):
    lines = [json.dumps({"question": q, "answer": a, "topic": t}) for q, a, t in HELD_OUT]
    if bad_line:
        lines.insert(1, '{"question": ')
    path = tmp_path / "heldout.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(tmp_path, **stage):
    cfg = config_dict(tmp_path)
    cfg["teachers"]["judge"] = {"plugin": "echo", "options": {"style": "judge"}}
    cfg["stages"].append(
        {
            "kind": "evaluate",
            "name": "eval",
            "data": {
                "path": str(_held_out(tmp_path, stage.pop("bad_line", False))),
                "prompt_field": "question",
                "response_field": "answer",
            },
            "contenders": [
                {"name": "short", "teacher": "writer", "system_prompt": "Be brief."},
                {"name": "long", "teacher": "inventor"},
            ],
            "evaluators": [
                {"plugin": "rubric", "options": {"function": "reward_fns:tagged_rubric"}},
                {"plugin": "judge-win-rate", "options": {"judge": "judge", "candidate": "long", "baseline": "short"}},
                "perplexity",
            ],
            "worst": 2,
            **stage,
        }
    )
    return cfg


def _errors(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate_plugin_options(parse_config(cfg), registry())
    return str(err.value)


def test_every_contender_answers_every_item_and_every_evaluator_scores(tmp_path):
    result = pipeline(_cfg(tmp_path, bad_line=True)).run()
    [ev] = result.evaluations
    doc = json.loads((tmp_path / "out" / "eval" / "eval" / "eval.json").read_text())
    assert ev.path == tmp_path / "out" / "eval" / "eval" / "eval.json" and not ev.skipped
    assert [c["name"] for c in doc["contenders"]] == ["short", "long"]
    assert [c["system_prompt"] for c in doc["contenders"]] == [True, False]
    assert len(doc["items"]) == 4 and doc["rejected"] and "line 2" in doc["rejected"][0]["where"]
    assert [it["tags"] for it in doc["items"]] == [{"topic": t} for *_, t in HELD_OUT]
    assert [it["reference"] for it in doc["items"]] == [a for _, a, _ in HELD_OUT]
    for it in doc["items"]:
        assert it["answers"]["short"].startswith("Answer ") and it["answers"]["long"].startswith("1. Explain")

    # The rubric saw the tags: only on-topic items pass, and only the `Answer ...` contender.
    assert ev.metrics["rubric"] == {"short": 0.5, "long": 0.0}
    assert [it["scores"]["rubric"]["short"] for it in doc["items"]] == [1.0, 1.0, 0.0, 0.0]
    assert doc["worst"]["rubric"]["short"] == [doc["items"][2]["id"], doc["items"][3]["id"]]

    # The echo judge prefers the longer answer, in both orders: `long` wins every item.
    judge = next(m for m in doc["metrics"] if m["name"] == "judge-win-rate")
    assert judge["scores"] == {"long": 1.0, "short": 0.0}
    assert judge["details"] == {
        "judge": "judge",
        "candidate": "long",
        "baseline": "short",
        "wins": 4,
        "ties": 0,
        "losses": 0,
        "unparseable": 0,
    }

    # No contender has local weights: perplexity says who it could not score rather than inventing it.
    ppl = next(m for m in doc["metrics"] if m["name"] == "perplexity")
    assert ppl["scores"] == {} and ppl["details"]["not scored"] == ["short", "long"]
    assert ppl["higher_is_better"] is False


def test_a_rerun_is_skipped_and_a_changed_stage_pays_no_teacher_again(tmp_path):
    cfg = _cfg(tmp_path)
    first = pipeline(cfg).run().evaluations[0]
    again = pipeline(cfg).run()
    assert again.evaluations[0].skipped and EchoTeacher.calls == []
    cfg["stages"][-1]["worst"] = 1  # redone, but every answer and verdict is in the cache
    changed = pipeline(cfg).run().evaluations[0]
    assert not changed.skipped and EchoTeacher.calls == [] and changed.metrics == first.metrics


def test_a_crashing_rubric_is_named_with_the_item(tmp_path):
    cfg = _cfg(tmp_path, evaluators=[{"plugin": "rubric", "options": {"function": "reward_fns:broken_rubric"}}])
    with pytest.raises(
        PluginError,
        match=r"rubric function 'reward_fns:broken_rubric' failed on held-out item "
        r"\S+ \(short\): ValueError: rubric bug",
    ):
        pipeline(cfg).run()


def test_a_judge_contender_that_does_not_exist_is_named(tmp_path):
    cfg = _cfg(
        tmp_path, evaluators=[{"plugin": "judge-win-rate", "options": {"judge": "judge", "candidate": "student"}}]
    )
    with pytest.raises(ConfigError, match="no contender named 'student' \\(contenders: short, long\\)"):
        pipeline(cfg).run()


@pytest.mark.parametrize(
    "change, fragment",
    [
        (
            {"contenders": [{"name": "s", "student": "train"}]},
            "stages[4].contenders[0].student: 'train' is not a train stage before this one (train stages so far: none)",
        ),
        (
            {"contenders": [{"name": "s", "teacher": "writer", "model": "embedded"}]},
            "needs exactly one of model, teacher, student (got model, teacher)",
        ),
        (
            {"contenders": [{"name": "s", "teacher": "wrtier"}]},
            "stages[4].contenders[0].teacher: no teacher named 'wrtier' (did you mean 'writer'?)",
        ),
        (
            {"contenders": [{"name": "s", "teacher": "writer"}, {"name": "s", "teacher": "inventor"}]},
            "duplicate contender name 's'",
        ),
        ({"evaluators": ["rubrik"]}, "stages[4].evaluators[0].plugin: unknown evaluator plugin 'rubrik'"),
        ({"evaluators": [{"plugin": "perplexity", "options": {"batch": 2}}]}, "stages[4].evaluators[0].options.batch"),
    ],
)
def test_config_errors_name_the_key(tmp_path, change, fragment):
    try:
        cfg = _cfg(tmp_path, **change)
        message = _errors(cfg)
    except ConfigError as exc:  # raised while parsing, before the plugin checks
        message = str(exc)
    assert fragment in message


@pytest.mark.slow
def test_a_trained_student_is_measured_against_its_base(tmp_path, tiny_model_dir):
    require_ml()
    pytest.importorskip("trl", reason="trl not installed (pip install 'distill[train]')")
    cfg = _cfg(tmp_path)
    cfg["teachers"]["tiny"] = {
        "plugin": "transformers",
        "options": {"model": str(tiny_model_dir), "max_tokens": 8, "temperature": 0.0},
    }
    cfg["stages"].insert(
        4,
        {
            "kind": "train",
            "name": "train",
            "student": str(tiny_model_dir),
            "student_license": "Apache-2.0",
            "steps": [
                {
                    "trainer": "sft",
                    "data": "sft",
                    "options": {
                        "max_steps": 8,
                        "batch_size": 2,
                        "learning_rate": 5e-3,
                        "logging_steps": 1,
                        "lora": {"r": 8},
                        "merge": False,
                    },
                }
            ],
        },
    )
    held = tmp_path / "train_like.jsonl"  # references in the form the student was trained on
    answers = [json.loads(line) for line in (tmp_path / "seeds.jsonl").read_text().splitlines()]
    held.write_text(
        "".join(
            json.dumps({"question": a["prompt"], "answer": f"Answer 1a2b3c4d: {a['prompt']}", "topic": "on"}) + "\n"
            for a in answers[:4]
        )
    )
    cfg["stages"][-1].update(
        {
            "data": {"path": str(held), "prompt_field": "question", "response_field": "answer"},
            "contenders": [
                {"name": "base", "model": str(tiny_model_dir)},
                {"name": "teacher", "teacher": "tiny", "system_prompt": "Be brief."},
                {"name": "student", "student": "train"},
            ],
            "engine": {"plugin": "transformers", "options": {"max_tokens": 8, "temperature": 0.0}},
            "evaluators": [
                {"plugin": "rubric", "options": {"function": "reward_fns:tagged_rubric"}},
                {"plugin": "judge-win-rate", "options": {"judge": "judge"}},
                "perplexity",
            ],
        }
    )
    result = pipeline(cfg).run()
    [ev] = result.evaluations
    doc = json.loads(ev.path.read_text())
    student = result.students[0].path
    assert (student / "adapter_config.json").is_file() and not (student / "config.json").is_file()
    assert (student / "merged" / "config.json").is_file()  # merged once, for the engine
    models = {c["name"]: c["model"] for c in doc["contenders"]}
    assert models["student"] != models["base"]
    for it in doc["items"]:
        assert set(it["answers"]) == {"base", "teacher", "student"}
    ppl = ev.metrics["perplexity"]
    assert set(ppl) == {"base", "teacher", "student"} and all(math.isfinite(v) and v > 1 for v in ppl.values())
    assert ppl["student"] < ppl["base"], ppl  # trained on answers of this form
    assert set(ev.metrics["judge-win-rate"]) == {"student", "teacher"}
    assert pipeline(cfg).run().evaluations[0].skipped


def test_a_teacher_answers_as_it_wrote_the_data_and_best_of_n_uses_its_ranker(tmp_path):
    """`prefix` prefills every answer as the response task does; `best_of` samples n answers and
    keeps the one the ranker scores highest (here the longest), and the results say so."""
    cfg = _cfg(tmp_path)
    cfg["stages"][-1]["contenders"] = [
        {"name": "plain", "teacher": "writer"},
        {"name": "prefixed", "teacher": "writer", "prefix": "Acme Support:"},
        {
            "name": "best",
            "teacher": "writer",
            "prefix": "Acme Support:",
            "best_of": 3,
            "ranker": {
                "plugin": "reward-function",
                "options": {"function": "reward_fns:prefers_short", "kwargs": {"penalty": -1}},
            },
        },
    ]
    cfg["stages"][-1]["evaluators"] = [{"plugin": "rubric", "options": {"function": "reward_fns:acme_rubric"}}]
    [ev] = pipeline(cfg).run().evaluations
    doc = json.loads(ev.path.read_text())
    assert ev.metrics["rubric"] == {"plain": 0.0, "prefixed": 1.0, "best": 1.0}
    assert [(c["prefix"], c["best_of"], c["ranker"]) for c in doc["contenders"]] == [
        (None, 1, None),
        ("Acme Support:", 1, None),
        ("Acme Support:", 3, "reward-function"),
    ]
    for it in doc["items"]:
        plain, prefixed, best = (it["answers"][k] for k in ("plain", "prefixed", "best"))
        assert prefixed.startswith("Acme Support: Answer ") and not plain.startswith("Acme")
        assert best.endswith("and more and more"), best  # the third sample, the ranker's choice
    # one request per item, asking for three samples: the cache holds them for a re-run
    EchoTeacher.calls.clear()
    cfg["stages"][-1]["worst"] = 1
    again = pipeline(cfg).run().evaluations[0]
    assert not again.skipped and EchoTeacher.calls == [] and again.metrics == ev.metrics
    from distill.report.html import write_report

    page = write_report(tmp_path / "out").read_text()
    assert "begin with &#x27;Acme Support:&#x27;" in page or "begin with 'Acme Support:'" in page
    assert "best of 3 by reward-function (a ranker at inference time)" in page


@pytest.mark.parametrize(
    ("contender", "message"),
    [
        ({"best_of": 4}, "best_of 4 needs a `ranker`"),
        ({"ranker": {"plugin": "reward-function"}}, "set best_of > 1"),
        (
            {"best_of": 2, "ranker": {"plugin": "judge"}, "judge": "nobody"},
            "contenders[0].judge: no teacher named 'nobody'",
        ),
        ({"best_of": 2, "ranker": {"plugin": "reward-functon"}}, "contenders[0].ranker.plugin"),
    ],
)
def test_a_best_of_contender_without_a_usable_ranker_is_a_config_error(tmp_path, contender, message):
    cfg = _cfg(tmp_path)
    cfg["stages"][-1]["contenders"] = [{"name": "t", "teacher": "writer", **contender}]
    assert message in _errors(cfg)
