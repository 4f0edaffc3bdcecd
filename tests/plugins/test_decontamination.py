"""Benchmark decontamination against eval sets on disk: JSONL, CSV, Parquet, a saved
`datasets` folder; 13-gram overlaps, short items matched whole, near misses kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.errors import PluginError
from distill.filter import KEEP, Drop
from distill.plugin import PluginContext
from distill.testing import make_record, run_filter
from distill_plugins.filters.decontamination import Decontamination

LONG_Q = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
SHORT_Q = "What is the boiling point of water at sea level?"  # 10 tokens: fewer than 13
OTHER = "Janet's ducks lay 16 eggs per day and she eats three for breakfast every morning."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make(tmp_path: Path, **options) -> Decontamination:
    f = Decontamination(**options)
    f.setup(PluginContext(base_dir=tmp_path))
    return f


@pytest.fixture
def gsm(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "gsm.jsonl",
        [
            {"question": OTHER, "answer": "#### 18", "id": 7},
            {"question": LONG_Q, "answer": "Natalia sold 48/2 = 24 clips in May. #### 72"},
            {"question": SHORT_Q, "answer": "100 degrees Celsius"},
        ],
    )


def test_thirteen_gram_overlap_in_prompt_or_response(tmp_path: Path, gsm: Path):
    f = make(tmp_path, eval_sets=[{"path": "gsm.jsonl", "fields": ["question"]}])
    copied = make_record("Solve this: " + LONG_Q.upper().replace(",", ""), "72")  # case and punctuation fold
    quoted = make_record(
        "Tell me about ducks.", "Janet's ducks lay 16 eggs per day, and she eats three for breakfast every morning!"
    )
    assert run_filter(f, [copied, quoted]) == [
        Drop("contaminated: 13-gram overlap with eval set 'gsm' item 1 (in prompt)"),
        Drop("contaminated: 13-gram overlap with eval set 'gsm' item 0 (in response)"),
    ]


def test_near_miss_below_n_tokens_of_overlap_is_kept(tmp_path: Path, gsm: Path):
    f = make(tmp_path, eval_sets=[{"path": str(gsm), "name": "gsm8k", "fields": ["question"]}])
    twelve = " ".join(LONG_Q.split()[:12])  # 12 tokens in a row, then a different word
    near = make_record(f"{twelve} cookies, and what else?", "Something unrelated entirely here.")
    assert run_filter(f, [near]) == [KEEP]
    thirteen = " ".join(LONG_Q.split()[:13])
    assert run_filter(f, [make_record(f"{thirteen} cookies?", "ok")]) == [
        Drop("contaminated: 13-gram overlap with eval set 'gsm8k' item 1 (in prompt)")
    ]


def test_short_items_are_matched_whole(tmp_path: Path, gsm: Path):
    f = make(tmp_path, eval_sets=[{"path": "gsm.jsonl"}])  # every text field; "#### 18" is too short
    hit = make_record("Quick one. What is the boiling point of water at sea level? Thanks", "100 C")
    partial = make_record("What is the boiling point of water?", "100 C")
    assert run_filter(f, [hit, partial]) == [
        Drop("contaminated: 10-gram overlap with eval set 'gsm' item 2 (in prompt, the whole item)"),
        KEEP,
    ]
    f = make(tmp_path, eval_sets=[{"path": "gsm.jsonl"}], min_tokens=11)
    assert run_filter(f, [hit]) == [KEEP]


def test_field_option_and_missing_fields(tmp_path: Path, gsm: Path):
    f = make(tmp_path, eval_sets=[{"path": "gsm.jsonl"}], field="response")
    assert run_filter(f, [make_record(LONG_Q, "fine"), make_record(LONG_Q)]) == [
        KEEP,
        Drop("missing field: no response to read"),
    ]
    f = make(tmp_path, eval_sets=[{"path": "gsm.jsonl"}])  # both: a prompt-only record lacks a part
    assert run_filter(f, [make_record("hello")]) == [Drop("missing field: no response to read")]


def test_saved_hf_dataset_csv_and_parquet(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    rows = [
        {"prompt": OTHER, "messages": [{"role": "user", "content": "unrelated words only here"}]},
        {"prompt": "short", "messages": [{"role": "user", "content": LONG_Q}]},
    ]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "heldout"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "split"))
    ds.to_parquet(str(tmp_path / "heldout.parquet"))
    (tmp_path / "heldout.csv").write_text(f'prompt,other\n"{OTHER}",x\n"{LONG_Q}",y\n')
    rec = make_record(LONG_Q, "ok")
    for path, item in [("heldout", 1), ("split", 1), ("heldout.parquet", 1), ("heldout.csv", 1)]:
        f = make(tmp_path, eval_sets=[{"path": path, "name": "held-out"}])
        assert run_filter(f, [rec]) == [
            Drop(f"contaminated: 13-gram overlap with eval set 'held-out' item {item} (in prompt)")
        ], path
    f = make(tmp_path, eval_sets=[{"path": "heldout", "fields": ["prompt"]}])
    assert run_filter(f, [rec, make_record(OTHER, "ok")]) == [
        KEEP,
        Drop("contaminated: 13-gram overlap with eval set 'heldout' item 0 (in prompt)"),
    ]


def test_several_eval_sets_name_the_one_matched(tmp_path: Path, gsm: Path):
    fox = "the quick brown fox jumps over the lazy dog near the old river bank"
    write_jsonl(tmp_path / "mine.jsonl", [{"text": fox}])
    f = make(tmp_path, eval_sets=[{"path": "gsm.jsonl"}, {"path": "mine.jsonl", "name": "own held-out"}])
    rec = make_record("x", "The quick brown fox jumps over the lazy dog near the old river bank, twice.")
    assert run_filter(f, [rec]) == [
        Drop("contaminated: 13-gram overlap with eval set 'own held-out' item 0 (in response)")
    ]


def test_eval_set_errors_name_the_file(tmp_path: Path, gsm: Path):
    with pytest.raises(PluginError, match=r"eval set 'absent': .*absent.jsonl not found"):
        make(tmp_path, eval_sets=[{"path": "absent.jsonl"}])
    with pytest.raises(PluginError, match=r"has no field 'questoin' \(fields: answer, id, question\)"):
        make(tmp_path, eval_sets=[{"path": "gsm.jsonl", "fields": ["questoin"]}])
    (tmp_path / "bad.jsonl").write_text('{"q": "fine"}\n{oops\n')
    with pytest.raises(PluginError, match=r"bad.jsonl line 2: invalid JSON"):
        make(tmp_path, eval_sets=[{"path": "bad.jsonl"}])
    write_jsonl(tmp_path / "tiny.jsonl", [{"q": "too short"}])
    with pytest.raises(PluginError, match="has no text of at least 8 tokens"):
        make(tmp_path, eval_sets=[{"path": "tiny.jsonl"}])
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(PluginError, match="cannot tell the format"):
        make(tmp_path, eval_sets=[{"path": "x.txt"}])


def test_bad_options_are_config_errors():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Decontamination(eval_sets=[{"path": "a.jsonl"}], ngram=13)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Decontamination(eval_sets=[{"path": "a.jsonl", "field": ["q"]}])
    with pytest.raises(ValidationError, match="at least 1 item"):
        Decontamination(eval_sets=[])


def test_without_setup_paths_are_relative_to_the_cwd(tmp_path: Path, gsm: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = Decontamination(eval_sets=[{"path": "gsm.jsonl"}])
    assert run_filter(f, [make_record(LONG_Q, "ok")]) == [
        Drop("contaminated: 13-gram overlap with eval set 'gsm' item 1 (in prompt)")
    ]
