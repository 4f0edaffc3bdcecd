"""Seed loading from real files of every format, including the malformed rows users really have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.errors import SeedError
from distill.io.seeds import SeedLoad, SeedSource, load_seeds
from distill.records import Record


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(path: Path, **kw: object) -> SeedLoad:
    kw.setdefault("license", "MIT")
    return load_seeds(SeedSource(path=path, **kw))


def _reasons(load: SeedLoad) -> list[str]:
    return [r.provenance.events[-1].reason or "" for r in load.rejected]


def _pairs(records: list[Record]) -> list[list[tuple[str, str]]]:
    return [[(m.role, m.content) for m in r.messages] for r in records]


# --- formats ---


def test_prompts_only_reads_no_answer_in_any_shape(tmp_path: Path) -> None:
    """A run that must learn from generated answers alone: no seed answer reaches any stage, not
    as a message and not as a field."""
    f = _write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"question": "2+2?", "answer": "4", "topic": "math"},
            {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
        ],
    )
    assert _pairs(_load(f).records)[0] == [("user", "2+2?"), ("assistant", "4")]  # by default the answer is read
    load = _load(f, prompts_only=True)
    assert not load.rejected
    assert _pairs(load.records) == [[("user", "2+2?")], [("user", "Hi?")]]
    assert load.records[0].metadata == {"seed_row": 1, "fields": {"topic": "math"}}
    with pytest.raises(ValidationError, match="prompts_only reads no answer"):
        SeedSource(path=f, prompts_only=True, response_field="answer")


def test_jsonl_prompt_response(tmp_path: Path) -> None:
    f = _write_jsonl(
        tmp_path / "qa.jsonl", [{"prompt": "2+2?", "response": "4", "topic": "math"}, {"prompt": "Capital of France?"}]
    )
    load = _load(f)
    assert not load.rejected and not load.warnings
    assert _pairs(load.records) == [[("user", "2+2?"), ("assistant", "4")], [("user", "Capital of France?")]]
    first = load.records[0]
    assert first.metadata == {"seed_row": 1, "fields": {"topic": "math"}}
    src = first.provenance.sources
    assert [(s.dataset, s.row, s.license) for s in src] == [("qa", 1, "MIT")]
    assert [(e.stage, e.action) for e in first.provenance.events] == [("seeds", "loaded")]
    assert first.provenance.license.expression == "MIT"
    assert first.provenance.license.use == "commercial"
    assert load.records[1].metadata["seed_row"] == 2


def test_csv_line_numbers_count_the_header_and_multiline_cells(tmp_path: Path) -> None:
    f = tmp_path / "seeds.csv"
    f.write_text('question,answer,level\n"What is\na haiku?",A poem,2\n\nWhy?,Because,3\n', encoding="utf-8")
    load = _load(f)
    assert _pairs(load.records) == [
        [("user", "What is\na haiku?"), ("assistant", "A poem")],
        [("user", "Why?"), ("assistant", "Because")],
    ]
    assert [r.metadata["seed_row"] for r in load.records] == [2, 5]
    assert load.records[0].metadata["fields"] == {"level": "2"}


def test_csv_bad_rows_are_rejected_with_their_line(tmp_path: Path) -> None:
    f = tmp_path / "seeds.csv"
    f.write_bytes(b"prompt,response\nok,fine\ntoo,many,cells\n,empty prompt\nbad \xff byte,x\nlast,one\n")
    load = _load(f)
    assert _pairs(load.records) == [[("user", "ok"), ("assistant", "fine")], [("user", "last"), ("assistant", "one")]]
    reasons = _reasons(load)
    assert reasons[0] == "line 3: wrong number of fields: 3, the header has 2"
    assert reasons[1].startswith("line 4: empty prompt")
    assert reasons[2] == "line 5: invalid UTF-8"
    assert load.rejected[2].metadata == {"line": 5, "raw": "bad \ufffd byte,x"}


def test_csv_with_no_prompt_column_is_a_seed_error(tmp_path: Path) -> None:
    f = tmp_path / "seeds.csv"
    f.write_text("text,label\nhello,1\n")
    with pytest.raises(SeedError, match="no prompt column.*text, label"):
        _load(f)
    with pytest.raises(SeedError, match="did you mean 'text'"):
        _load(f, prompt_field="txt")


def test_parquet_rows_are_zero_based(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "data.parquet"
    table = pa.table(
        {
            "instruction": ["Say hi", "", "Count"],
            "output": ["hi", "x", None],
            "score": [0.5, 1.0, 2.0],
            "tags": [["a"], [], ["b"]],
        }
    )
    pq.write_table(table, f)
    load = _load(f)
    assert _pairs(load.records) == [[("user", "Say hi"), ("assistant", "hi")], [("user", "Count")]]
    assert [r.metadata["seed_row"] for r in load.records] == [0, 2]
    assert load.records[0].metadata["fields"] == {"score": 0.5}
    assert _reasons(load) == ["row 1: empty prompt: field 'instruction'"]
    assert load.rejected[0].metadata["row"] == 1
    assert any("tags" in w and "not JSON scalars" in w for w in load.warnings)


def test_hf_folder_with_messages_column(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "chat_ds"
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ],
            "source": "web",
        },
        {"messages": [{"role": "user", "content": "Bye"}], "source": "web"},
        {"messages": [{"role": "robot", "content": "beep"}], "source": "web"},
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    load = _load(folder)
    assert _pairs(load.records) == [
        [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello")],
        [("user", "Bye")],
    ]
    assert load.records[0].provenance.sources[0].dataset == "chat_ds"
    assert load.records[1].metadata == {"seed_row": 1, "fields": {"source": "web"}}
    assert len(_reasons(load)) == 1 and _reasons(load)[0].startswith("row 2: invalid messages list")


def test_hf_dataset_dict_with_several_splits_names_them(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "dd"
    one = datasets.Dataset.from_list([{"prompt": "p"}])
    datasets.DatasetDict({"train": one, "test": one}).save_to_disk(str(folder))
    with pytest.raises(SeedError, match="train, test"):
        _load(folder)
    assert len(_load(folder / "train").records) == 1


# --- fields ---


def test_explicit_fields_and_system(tmp_path: Path) -> None:
    f = _write_jsonl(tmp_path / "s.jsonl", [{"q": "Why?", "a": "So.", "sys": "Be kind.", "prompt": "ignored"}])
    load = _load(f, prompt_field="q", response_field="a", system_field="sys")
    assert _pairs(load.records) == [[("system", "Be kind."), ("user", "Why?"), ("assistant", "So.")]]
    assert load.records[0].metadata["fields"] == {"prompt": "ignored"}


def test_auto_detection_order(tmp_path: Path) -> None:
    f = _write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"question": "Q1", "answer": "A1"},
            {"prompt": "P", "question": "Q", "completion": "C", "output": "O"},
            {"instruction": "Translate", "input": "bonjour", "output": "hello"},
            {"instruction": "Greet", "input": "", "output": "hi"},
            {"input": "I"},
        ],
    )
    load = _load(f)
    assert _pairs(load.records) == [
        [("user", "Q1"), ("assistant", "A1")],
        [("user", "P"), ("assistant", "O")],
        [("user", "Translate\n\nbonjour"), ("assistant", "hello")],
        [("user", "Greet"), ("assistant", "hi")],
        [("user", "I")],
    ]
    assert load.records[1].metadata["fields"] == {"question": "Q", "completion": "C"}
    assert "fields" not in load.records[2].metadata


def test_messages_list_with_response_field_appended(tmp_path: Path) -> None:
    f = _write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"messages": [{"role": "user", "content": "Hi"}], "response": "Hello"},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "response": "x"},
        ],
    )
    load = _load(f)
    assert _pairs(load.records) == [[("user", "Hi"), ("assistant", "Hello")]]
    assert _reasons(load)[0].startswith("line 2: invalid messages list: ends with an assistant reply")


def test_limit_counts_good_records(tmp_path: Path) -> None:
    f = _write_jsonl(tmp_path / "s.jsonl", [{"prompt": "a"}, {"nope": 1}, {"prompt": "b"}, {"prompt": "c"}])
    load = _load(f, limit=2)
    assert _pairs(load.records) == [[("user", "a")], [("user", "b")]]
    assert len(load.rejected) == 1


# --- malformed input ---


def test_malformed_jsonl_lines_are_rejected_and_the_rest_load(tmp_path: Path) -> None:
    lines = [
        b'{"prompt": "good one", "response": "yes"}',  # 1
        b'{"prompt": "broken',  # 2 invalid JSON
        b"[1, 2, 3]",  # 3 not an object
        b'{"text": "no prompt here"}',  # 4 missing prompt field
        b'{"prompt": 42}',  # 5 non-string content
        b'{"prompt": "   "}',  # 6 empty prompt
        b'{"messages": [{"role": "user"}]}',  # 7 invalid messages list
        b'{"prompt": "caf\xe9"}',  # 8 invalid UTF-8 (latin-1 byte)
        b"",  # 9 blank: skipped, not counted
        b'{"prompt": "hi", "response": 7}',  # 10 non-string response
        b'{"messages": []}',  # 11 no user message
        b'{"prompt": "good two"}',  # 12
    ]
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    load = _load(f)
    assert _pairs(load.records) == [[("user", "good one"), ("assistant", "yes")], [("user", "good two")]]
    assert [r.metadata["seed_row"] for r in load.records] == [1, 12]
    non_blank = sum(1 for line in lines if line.strip())
    assert len(load.records) + len(load.rejected) == non_blank
    reasons = _reasons(load)
    expected = [
        "line 2: invalid JSON: ",
        "line 3: not a JSON object: got an array",
        "line 4: missing prompt field",
        "line 5: non-string content: field 'prompt' is a number",
        "line 6: empty prompt",
        "line 7: invalid messages list",
        "line 8: invalid UTF-8",
        "line 10: non-string content: response field 'response'",
        "line 11: invalid messages list: no user message",
    ]
    assert len(reasons) == len(expected)
    for got, want in zip(reasons, expected):
        assert got.startswith(want), (got, want)
    assert "Unterminated string" in reasons[0]
    bad = load.rejected[0]
    assert bad.messages == []
    assert bad.metadata == {"line": 2, "raw": '{"prompt": "broken'}
    assert [(s.dataset, s.row) for s in bad.provenance.sources] == [("bad", 2)]
    assert [(e.stage, e.action) for e in bad.provenance.events] == [("seeds", "dropped")]
    assert load.rejected[6].metadata["raw"] == '{"prompt": "caf\ufffd"}'
    assert len({r.id for r in load.records + load.rejected}) == len(load.records) + len(load.rejected)


def test_raw_is_truncated(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text('{"prompt": "' + "x" * 2000 + "\n")
    load = _load(f)
    assert len(load.rejected[0].metadata["raw"]) == 500


def test_empty_file_gives_a_warning(tmp_path: Path) -> None:
    for name in ("e.jsonl", "e.csv"):
        f = tmp_path / name
        f.write_text("")
        load = _load(f)
        assert load.records == [] and load.rejected == []
        assert any("no rows" in w for w in load.warnings)


def test_missing_file_and_unknown_suffix_are_seed_errors(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="nope.jsonl"):
        _load(tmp_path / "nope.jsonl")
    odd = tmp_path / "seeds.txt"
    odd.write_text("hello\n")
    with pytest.raises(SeedError, match="seeds.txt.*format"):
        _load(odd)
    corrupt = tmp_path / "c.parquet"
    corrupt.write_bytes(b"not parquet at all")
    with pytest.raises(SeedError, match="c.parquet"):
        _load(corrupt)
    with pytest.raises(SeedError, match="not a datasets.save_to_disk folder"):
        _load(tmp_path)


def test_relative_path_resolves_against_base_dir(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "rel.jsonl", [{"prompt": "p"}])
    load = load_seeds(SeedSource(path=Path("rel.jsonl"), license="MIT"), base_dir=tmp_path)
    assert len(load.records) == 1


# --- licenses and ids ---


def test_no_license_is_unspecified_with_a_warning(tmp_path: Path) -> None:
    f = _write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p"}])
    load = load_seeds(SeedSource(path=f))
    rec = load.records[0]
    assert rec.provenance.sources[0].license == "LicenseRef-Unspecified"
    assert rec.provenance.license.expression == "LicenseRef-Unspecified"
    assert rec.provenance.license.use == "unspecified"
    assert len(load.warnings) == 1
    assert "no declared license" in load.warnings[0] and "release" in load.warnings[0]


def test_license_is_normalized_and_combined() -> None:
    src = SeedSource(path=Path("x.jsonl"), license="apache-2.0 OR mit")
    assert src.license == "Apache-2.0 OR MIT"
    assert src.name == "x"


def test_bad_license_is_a_validation_error_with_a_suggestion() -> None:
    with pytest.raises(ValidationError) as info:
        SeedSource(path=Path("x.jsonl"), license="Apache2.0")
    msg = str(info.value)
    assert "'Apache2.0'" in msg
    assert "did you mean Apache-2.0" in msg
    assert info.value.errors()[0]["loc"] == ("license",)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError):
        SeedSource.model_validate({"path": "x.jsonl", "licence": "MIT"})


def test_ids_are_stable_across_loads(tmp_path: Path) -> None:
    f = _write_jsonl(tmp_path / "s.jsonl", [{"prompt": "a"}, {"prompt": "a"}, {"bad": 1}])
    one, two = _load(f), _load(f)
    assert [r.id for r in one.records + one.rejected] == [r.id for r in two.records + two.rejected]
    assert one.records[0].id != one.records[1].id  # same content, different row
    renamed = _load(f, name="other")
    assert renamed.records[0].id != one.records[0].id


def test_records_round_trip_through_json(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_bytes(b'{"prompt": "p", "n": 1, "x": null, "ok": true}\n\xff\xfe\n')
    load = _load(f)
    for r in load.records + load.rejected:
        assert Record.model_validate_json(r.to_json()) == r
    assert load.records[0].metadata["fields"] == {"n": 1, "x": None, "ok": True}


def test_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, distill.io.seeds, distill.io.export; "
        "bad = [m for m in ('torch', 'transformers', 'datasets', 'pyarrow', 'pandas') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
