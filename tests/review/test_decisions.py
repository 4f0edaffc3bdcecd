"""The decisions file: durable, idempotent, torn-line tolerant; folding and agreement."""

from __future__ import annotations

import json
import multiprocessing
import uuid

import pytest

from distill.review.decisions import Decision, DecisionLog, agreement, fold, parse_decision


def d(record: str, reviewer: str, action: str, **kw) -> Decision:
    return Decision(id=uuid.uuid4().hex, record=record, reviewer=reviewer, action=action, **kw)


def test_appends_once_per_id_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    first = d("r1", "ann", "accept")
    assert log.append(first) and not log.append(first)  # a retried write is recorded once
    with open(path, "ab") as fh:
        fh.write(b'{"id": "torn-by-a-kill", "rec')  # a write cut short
    assert log.append(d("r2", "ann", "reject", reason="off topic"))
    again = DecisionLog(path)
    assert [x.record for x in again.decisions] == ["r1", "r2"] and again.torn == 1
    assert len(path.read_text().splitlines()) == 3


def _append_many(path: str, who: str) -> None:
    log = DecisionLog(__import__("pathlib").Path(path))
    for i in range(50):
        log.append(d(f"r{i}", who, "accept"))


def test_two_servers_appending_at_once_interleave_whole_lines(tmp_path):
    path = tmp_path / "decisions.jsonl"
    procs = [multiprocessing.Process(target=_append_many, args=(str(path), who)) for who in ("ann", "bob")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    lines = path.read_text().splitlines()
    assert len(lines) == 100 and all(json.loads(x)["action"] == "accept" for x in lines)


def test_folding_keeps_the_last_word_and_clear_resets():
    state = fold(
        [
            d("r", "ann", "reject", reason="wrong"),
            d("r", "ann", "accept"),
            d("r", "ann", "choose", candidate=2),
            d("r", "ann", "edit", candidate=2, text="better"),
            d("r", "ann", "flag", reason="check facts"),
        ]
    )
    assert (state.verdict, state.ranking, state.edits, state.flagged) == ("accept", [2], {"2": "better"}, True)
    assert not fold([d("r", "ann", "accept"), d("r", "ann", "clear")]).decided


def test_agreement_and_kappa():
    states = {
        "r1": {"ann": fold([d("r1", "ann", "accept")]), "bob": fold([d("r1", "bob", "accept")])},
        "r2": {"ann": fold([d("r2", "ann", "reject", reason="x")]), "bob": fold([d("r2", "bob", "accept")])},
        "r3": {
            "ann": fold([d("r3", "ann", "reject", reason="x")]),
            "bob": fold([d("r3", "bob", "reject", reason="y")]),
        },
        "r4": {
            "ann": fold([d("r4", "ann", "choose", candidate=0)]),
            "bob": fold([d("r4", "bob", "choose", candidate=1)]),
        },
    }
    a = agreement(states)
    assert a["verdict_pairs"] == 3 and a["verdict_agreement"] == pytest.approx(2 / 3, abs=1e-3)
    # observed 2/3; expected: ann accepts 1/3, bob 2/3 -> 1/3*2/3 + 2/3*1/3 = 4/9; kappa = (2/3-4/9)/(5/9) = 0.4
    assert a["verdict_kappa"] == pytest.approx(0.4, abs=1e-3)
    assert (a["best_candidate_pairs"], a["best_candidate_agreement"]) == (1, 0.0)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not JSON"),
        (b"[]", "a decision is a JSON object"),
        (
            json.dumps({"id": "abcdefgh12", "record": "r", "reviewer": "a", "action": "reject"}).encode(),
            "needs a reason",
        ),
        (json.dumps({"id": "abcdefgh12", "record": "r", "reviewer": "a", "action": "delete"}).encode(), "action"),
        (json.dumps({"id": "<script>", "record": "r", "reviewer": "a", "action": "accept"}).encode(), "id"),
        (
            json.dumps(
                {"id": "abcdefgh12", "record": "r", "reviewer": "a", "action": "rank", "ranking": [1, 1]}
            ).encode(),
            "distinct",
        ),
    ],
)
def test_bad_decisions_are_refused_with_what_is_wrong(body, error):
    with pytest.raises(ValueError, match=error):
        parse_decision(body)
