"""Quality heuristics on hand-built records: the exact reasons each rule gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.errors import PluginError
from distill.filter import KEEP, Drop
from distill.plugin import PluginContext
from distill.records import Candidate
from distill.testing import make_record, run_filter
from distill_plugins.filters.quality import (
    LengthFilter,
    RefusalFilter,
    RepetitionFilter,
    SelfIdentificationFilter,
    TruncationFilter,
    unclosed_fence,
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    """A folder holding only SmolLM2's real tokenizer.json, copied from the embedded model."""
    out = tmp_path_factory.mktemp("tok")
    shutil.copy(embedded_model_dir / "tokenizer.json", out / "tokenizer.json")
    return out


def test_word_bounds_and_missing_fields():
    f = LengthFilter(field="prompt", min_words=2, max_words=3)
    no_prompt = make_record("q", "a")
    no_prompt.messages[0].content = "  "
    assert run_filter(f, [make_record("one"), make_record("a b c"), make_record("a b c d"), no_prompt]) == [
        Drop("prompt too short: 1 < 2 words"),
        KEEP,
        Drop("prompt too long: 4 > 3 words"),
        Drop("missing field: no instruction (user message) to read"),
    ]
    assert run_filter(LengthFilter(), [make_record("q")]) == [Drop("missing field: no response to read")]


def test_token_bounds_with_a_real_tokenizer(tokenizer_dir: Path, tmp_path: Path):
    f = LengthFilter(min_tokens=3, max_tokens=8, tokenizer=str(tokenizer_dir))
    f.setup(PluginContext(base_dir=tmp_path))
    assert f.count_tokens("Hello world") == 2  # SmolLM2's BPE, no special tokens added
    long = "internationalisation " * 5
    n = f.count_tokens(long)
    assert n > 8
    recs = [make_record("q", "Hello world"), make_record("q", "Hello world, how are you?"), make_record("q", long)]
    assert run_filter(f, recs) == [
        Drop("response too short: 2 < 3 tokens"),
        KEEP,
        Drop(f"response too long: {n} > 8 tokens"),
    ]


def test_tokenizer_path_resolves_against_base_dir_or_the_cwd(tokenizer_dir: Path, tmp_path: Path, monkeypatch):
    f = LengthFilter(max_tokens=2, tokenizer=tokenizer_dir.name)
    f.setup(PluginContext(base_dir=tokenizer_dir.parent))
    assert run_filter(f, [make_record("q", "Hello world"), make_record("q", "Hello big world")]) == [
        KEEP,
        Drop("response too long: 3 > 2 tokens"),
    ]
    f = LengthFilter(max_tokens=2, tokenizer="tokenizer.json")  # a file; no setup: relative to the cwd
    monkeypatch.chdir(tokenizer_dir)
    assert run_filter(f, [make_record("q", "Hello big world")]) == [Drop("response too long: 3 > 2 tokens")]


def test_token_bounds_need_a_tokenizer_and_a_real_path(tmp_path: Path):
    with pytest.raises(ValidationError, match="min_tokens/max_tokens need `tokenizer`"):
        LengthFilter(max_tokens=10)
    with pytest.raises(ValidationError, match="max_tokens must be >= min_tokens"):
        LengthFilter(min_tokens=5, max_tokens=2, tokenizer="x")
    with pytest.raises(PluginError, match=r"tokenizer .*nope not found"):
        LengthFilter(max_tokens=10, tokenizer="nope").setup(PluginContext(base_dir=tmp_path))
    with pytest.raises(PluginError, match="has no tokenizer.json"):
        LengthFilter(max_tokens=10, tokenizer=".").setup(PluginContext(base_dir=tmp_path))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PluginError, match="cannot load tokenizer"):
        LengthFilter(max_tokens=10, tokenizer="bad.json").setup(PluginContext(base_dir=tmp_path))


@pytest.mark.parametrize(
    "cls", [LengthFilter, RefusalFilter, SelfIdentificationFilter, TruncationFilter, RepetitionFilter]
)
def test_unknown_options_are_config_errors(cls):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        cls(fieldd="response")


def test_refusals_are_counted_per_phrase_with_folded_punctuation():
    f = RefusalFilter()
    recs = [
        make_record("q", "I’m sorry, but I can’t help with that."),  # curly quotes
        make_record("q", "Sure. I CANNOT ASSIST with that, though."),
        make_record("q", "Here is how to sort a list in Python."),
        make_record("q", "I'm sorry, I canteen"),
    ]  # word boundaries: "can t" is not "canteen"
    assert run_filter(f, recs) == [
        Drop("refusal \"i'm sorry, but i can't\": in response"),
        Drop('refusal "i cannot assist": in response'),
        KEEP,
        KEEP,
    ]


def test_phrase_lists_replace_or_extend_the_defaults():
    f = RefusalFilter(phrases=["Nope: not doing it"], field="both")
    assert run_filter(f, [make_record("Nope, not doing it!", "ok"), make_record("q", "I cannot assist")]) == [
        Drop('refusal "nope:not doing it": in both'),
        KEEP,
    ]
    f = RefusalFilter(extra_phrases=["I would rather not"])
    assert run_filter(f, [make_record("q", "I would rather not."), make_record("q", "I cannot assist.")]) == [
        Drop('refusal "i would rather not": in response'),
        Drop('refusal "i cannot assist": in response'),
    ]
    with pytest.raises(ValidationError, match="has no letters or digits"):
        RefusalFilter(extra_phrases=["?!"])


def test_self_identification():
    f = SelfIdentificationFilter()
    recs = [
        make_record("q", "As an AI language model, I have no opinions."),
        make_record("q", "Hello! I am ChatGPT, a model trained by OpenAI."),
        make_record("q", "As an aimless wanderer, I walked."),
        make_record("q", "I'm sorry, but I can't."),
    ]
    assert run_filter(f, recs) == [
        Drop('self-identification "as an ai language model": in response'),
        Drop('self-identification "i am chatgpt": in response'),
        KEEP,
        KEEP,
    ]


def test_truncation_empty_finish_reason_and_code_fences():
    f = TruncationFilter()
    cut = make_record("q", "The answer is")
    cut.metadata["finish_reason"] = "length"
    ranked = make_record("q", "Best answer")  # after ranking the chosen candidate's reason counts
    ranked.metadata["finish_reason"] = "stop"
    ranked.candidates = [
        Candidate(content="Other", finish_reason="stop"),
        Candidate(content="Best answer", finish_reason="length"),
    ]
    fine = make_record("q", "Done.")
    fine.candidates = [Candidate(content="Done.", finish_reason="stop")]
    fine.metadata["finish_reason"] = "length"  # the first sample's, not the chosen one's
    recs = [
        make_record("q", "   \n"),
        make_record("q"),
        cut,
        ranked,
        fine,
        make_record("q", "Code:\n```python\nprint(1)\n"),
        make_record("q", "Code:\n```python\nprint(1)\n```"),
    ]
    assert run_filter(f, recs) == [
        Drop("empty response: blank or whitespace only"),
        Drop("missing field: no response to read"),
        Drop("truncated: stopped at the token limit (finish_reason 'length')"),
        Drop("truncated: stopped at the token limit (finish_reason 'length')"),
        KEEP,
        Drop("unclosed code fence: opened on line 2"),
        KEEP,
    ]
    assert run_filter(TruncationFilter(finish_reasons=[], code_fences=False), [cut]) == [KEEP]


@pytest.mark.parametrize(
    "text,line",
    [
        ("```\na\n```", None),
        ("````\n```\nstill code\n````", None),  # a shorter fence does not close a longer one
        ("````\n```\nstill code\n```", 1),
        ("~~~\ncode\n```\n", 1),  # a backtick fence does not close a tilde fence
        ("1. Step:\n    ```bash\n    ls\n    ```\n2. Done", None),  # indented, in a list
        ("Use ```inline``` quotes", None),  # not a fence: backticks in the info string
        ("```\nok\n```\n\n```js\nlet x", 5),
        ("```\na\n``` trailing", 1),  # a closing fence has nothing after it
    ],
)
def test_unclosed_fence(text, line):
    assert unclosed_fence(text) == line


def test_repetition_rules():
    f = RepetitionFilter()
    words = (
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
        "tau upsilon phi chi psi omega one two three four five six seven eight nine ten eleven twelve "
        "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
    ).split()
    vocab = words + [w + "s" for w in words]
    varied = " ".join(vocab)
    looping = " ".join(vocab[:60] + vocab[:20])  # 60 distinct words, then the first 20 again
    frequent = " ".join(w for pair in zip(words[:30], ["the cat"] * 30) for w in pair)
    lines = "\n".join(["print('this line repeats itself')"] * 6 + ["}"] * 10)
    short = "la la la la la la la la"
    recs = [make_record("q", t) for t in (varied, looping, frequent, lines, short)]
    assert run_filter(f, recs) == [
        KEEP,
        Drop("repeated n-grams: 23% of characters in repeated 5-grams (max 15%)"),
        Drop("frequent n-gram: the most frequent 2-gram covers 60% of characters (max 20%)"),
        Drop("repeated line: one line occurs 6 times (max 5)"),
        KEEP,  # fewer than min_words words: ratios on 8 words are noise
    ]
    assert run_filter(RepetitionFilter(min_words=5), [recs[4]]) == [
        Drop("frequent n-gram: the most frequent 2-gram covers 100% of characters (max 20%)")
    ]
    assert run_filter(RepetitionFilter(max_line_repeats=None), [recs[3]]) == [KEEP]
    with pytest.raises(ValidationError, match="fraction in"):
        RepetitionFilter(dup_ngrams={5: 1.5})
