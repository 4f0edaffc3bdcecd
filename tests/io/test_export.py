"""Export to `datasets` folders in TRL's conversational SFT and preference formats, read back for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.errors import StoreError
from distill.io.export import NO_PAIR, NO_RESPONSE, export_records
from distill.records import Candidate, Message, Record

datasets = pytest.importorskip("datasets")


def _rec(id: str, *turns: tuple[str, str], candidates: list[Candidate] | None = None) -> Record:
    return Record(
        id=id,
        messages=[Message(role=r, content=c) for r, c in turns],  # type: ignore[arg-type]
        candidates=candidates or [],
    )


def test_sft_round_trip(tmp_path: Path) -> None:
    good = _rec("a", ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))
    second = _rec("b", ("user", "2+2?"), ("assistant", "4"))
    no_answer = _rec("c", ("user", "Unanswered"))
    empty_answer = _rec("d", ("user", "Q"), ("assistant", "  "))
    out = tmp_path / "export" / "sft"
    result = export_records(iter([good, no_answer, second, empty_answer]), "sft", out)
    assert result.path == out and result.rows == 2
    assert result.kept == [good, second] and result.kept[0] is good
    assert [(r.id, why) for r, why in result.rejected] == [("c", NO_RESPONSE), ("d", NO_RESPONSE)]
    assert NO_RESPONSE == "no assistant response"
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["id", "messages"]
    assert ds.num_rows == 2
    assert ds[0] == {
        "id": "a",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ],
    }
    assert ds[1]["messages"][-1] == {"role": "assistant", "content": "4"}


def test_preference_round_trip(tmp_path: Path) -> None:
    ranked = _rec(
        "p1",
        ("system", "Be kind."),
        ("user", "Tell a joke"),
        candidates=[
            Candidate(content="meh", score=0.2),
            Candidate(content="great", score=0.9),
            Candidate(content="ok", score=0.5),
            Candidate(content="unscored"),
        ],
    )
    # A trailing assistant answer is not part of the prompt.
    answered = _rec(
        "p2",
        ("user", "Hi"),
        ("assistant", "old"),
        candidates=[Candidate(content="A", score=1.0), Candidate(content="B", score=3.0)],
    )
    tie = _rec("t", ("user", "Q"), candidates=[Candidate(content="x", score=1.0), Candidate(content="y", score=1.0)])
    single = _rec("s", ("user", "Q"), candidates=[Candidate(content="x", score=1.0)])
    unscored = _rec("u", ("user", "Q"), candidates=[Candidate(content="x"), Candidate(content="y")])
    out = tmp_path / "pref"
    result = export_records([ranked, tie, answered, single, unscored], "preference", out)
    assert [r.id for r in result.kept] == ["p1", "p2"] and result.rows == 2
    assert [(r.id, why) for r, why in result.rejected] == [("t", NO_PAIR), ("s", NO_PAIR), ("u", NO_PAIR)]
    assert NO_PAIR == "no preference pair: needs two candidates with different scores"
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["id", "prompt", "chosen", "rejected", "margin"]
    row = ds[0]
    assert row["id"] == "p1"
    assert row["prompt"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Tell a joke"}]
    assert row["chosen"] == [{"role": "assistant", "content": "great"}]
    assert row["rejected"] == [{"role": "assistant", "content": "meh"}]
    assert row["margin"] == pytest.approx(0.7)
    assert ds[1]["prompt"] == [{"role": "user", "content": "Hi"}]
    assert ds[1]["chosen"][0]["content"] == "B" and ds[1]["margin"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "fmt,columns", [("sft", ["id", "messages"]), ("preference", ["id", "prompt", "chosen", "rejected", "margin"])]
)
def test_zero_rows_still_write_a_readable_dataset(tmp_path: Path, fmt: str, columns: list[str]) -> None:
    out = tmp_path / fmt
    result = export_records([_rec("x", ("user", "no answer"))], fmt, out)  # type: ignore[arg-type]
    assert result.rows == 0 and len(result.rejected) == 1
    ds = datasets.load_from_disk(str(out))
    assert ds.num_rows == 0
    assert ds.column_names == columns
    assert ds.features["id"] == datasets.Value("string")


def test_export_replaces_a_previous_dataset_and_leaves_no_temp_folders(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    export_records([_rec("old", ("user", "q"), ("assistant", "a"))], "sft", out)
    stale = tmp_path / ".sft.tmp-deadbeef"  # what a killed export leaves behind
    stale.mkdir()
    (stale / "junk.arrow").write_bytes(b"partial")
    export_records([_rec("new", ("user", "q"), ("assistant", "b"))], "sft", out)
    ds = datasets.load_from_disk(str(out))
    assert ds["id"] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]


def test_export_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(StoreError, match="not a saved dataset"):
        export_records([_rec("a", ("user", "q"), ("assistant", "a"))], "sft", out)
    assert (out / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_export_into_an_empty_existing_folder(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    export_records([_rec("a", ("user", "q"), ("assistant", "a"))], "sft", out)
    assert datasets.load_from_disk(str(out)).num_rows == 1


def test_seeds_to_sft_end_to_end(tmp_path: Path) -> None:
    from distill.io.seeds import SeedSource, load_seeds

    f = tmp_path / "seeds.jsonl"
    f.write_text('{"prompt": "p1", "response": "r1"}\n{"prompt": "p2"}\n')
    load = load_seeds(SeedSource(path=f, license="CC-BY-4.0"))
    result = export_records(load.records, "sft", tmp_path / "out")
    assert result.rows == 1 and result.rejected[0][1] == NO_RESPONSE
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds[0]["id"] == load.records[0].id


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export_records([], "dpo", tmp_path / "x")  # type: ignore[arg-type]
