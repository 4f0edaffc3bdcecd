"""PII detection: what is found, what is not (version numbers, dates, ISBNs, identifiers),
and that neither redacted text nor reasons keep the values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distill.filter import KEEP, Drop, Edit
from distill.records import Candidate, Message
from distill.testing import make_record, run_filter
from distill_plugins.filters.pii import PiiFilter, luhn

SECRETS = {
    "email": ["jane.doe+news@gmail.com", "ops@mail.acme-corp.co.uk"],
    "phone": ["(415) 555-2671", "+44 20 7946 0958", "+1-202-555-0143"],
    "ip": ["8.8.8.8", "2001:4860:4860::8888", "2a00:1450:4001:81b::200e"],
    "credit-card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
    "api-key": [
        "sk-proj-4fQ9xZ2mB7kL1pR8tW3yN6cV0hJ5gD",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a1B2c3D4e5F6g7H8i9J0" * 2,
        "xoxb-1234567890-abcdefghij",
        "hf_" + "AbCdEfGhIj1234567890KlMnOpQrSt",
        "Zx9mK2pQ7vL4nR8tW3yB6cF1hJ5gD0sA",
    ],
}


def kinds_found(text: str, **options) -> list[tuple[str, str]]:
    f = PiiFilter(**options)
    return [(text[s:e], k) for s, e, k in f.find(text)]


@pytest.mark.parametrize("kind,value", [(k, v) for k, vs in SECRETS.items() for v in vs])
def test_each_kind_is_found_in_a_sentence(kind, value):
    assert kinds_found(f"Here it is: {value}. Thanks!") == [(value, kind)]


@pytest.mark.parametrize(
    "text",
    [
        "Upgrade to version 1.2.3.4.5 or v1.2.3.4 today.",
        "The meeting is on 2023-10-12 at 10:30:45, or 12/10/2023.",
        "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2.",
        "Order #20231012, invoice 1700000000000 (a timestamp), 4111 1111 1111 1112 (bad checksum).",
        "Pneumonoultramicroscopicsilicovolcanoconiosis and AbstractSingletonProxyFactoryBean2Impl.",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, "
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "Servers at 127.0.0.1, 192.168.1.10 and 10.0.0.1; docs use 192.0.2.1 and 2001:db8::1.",
        "In C++ use std::vector; in Python a[::2]; the ratio is 3:4:5.",
        "Write to user@example.com or admin@test; the key is sk-xxxxxxxxxxxxxxxxxxxxxxxx.",
        "Price 1,234,567.89 with coordinates 40.7128, -74.0060.",
        "@app.route('/login') and git tag v2.0.0",
    ],
)
def test_tricky_negatives(text):
    assert kinds_found(text) == []


def test_options_widen_or_narrow_detection():
    assert kinds_found("ping 192.168.1.10", private_ips=True) == [("192.168.1.10", "ip")]
    assert kinds_found("call 020 7946 0958") == []
    assert kinds_found("call 020 7946 0958", phone_regions=["us", "gb"]) == [("020 7946 0958", "phone")]
    assert kinds_found("mail a@gmail.com, 8.8.8.8", kinds=["ip"]) == [("8.8.8.8", "ip")]
    assert kinds_found("a@corp.internal.example.com b@corp.com", allow_domains=["corp.com"]) == [
        ("a@corp.internal.example.com", "email")
    ]
    assert kinds_found("Zx9mK2pQ7vL4nR8tW3yB6cF1hJ5gD0sA", entropy_tokens=False) == []


def test_redaction_replaces_every_value_and_reports_only_counts():
    rec = make_record(
        "I'm jane@gmail.com, call (415) 555-2671 or +1-202-555-0143. Mail jane@gmail.com!",
        "Noted: jane@gmail.com, from 8.8.8.8.",
        candidates=[("Noted: jane@gmail.com, from 8.8.8.8.", 1.0), ("key sk-ant-api03-Ab12Cd34Ef56Gh78Ij90", 0.0)],
    )
    rec.messages.insert(0, Message(role="system", content="Card on file: 4111-1111-1111-1111"))
    (d,) = run_filter(PiiFilter(), [rec])
    assert isinstance(d, Edit) and d.record.id == rec.id
    assert d.reason == "redacted: email x1, phone x2, ip x1, credit-card x1, api-key x1"
    assert [m.content for m in d.record.messages] == [
        "Card on file: [CREDIT_CARD]",
        "I'm [EMAIL], call [PHONE] or [PHONE]. Mail [EMAIL]!",
        "Noted: [EMAIL], from [IP_ADDRESS].",
    ]
    assert [c.content for c in d.record.candidates] == ["Noted: [EMAIL], from [IP_ADDRESS].", "key [API_KEY]"]
    assert rec.messages[1].content.startswith("I'm jane@gmail.com")  # the input record is untouched
    dumped = d.record.model_dump_json() + d.reason
    for value in ("jane@gmail.com", "555-2671", "202-555", "8.8.8.8", "4111", "sk-ant"):
        assert value not in dumped


def test_roles_and_candidates_limit_what_is_scanned():
    rec = make_record("from jane@gmail.com", "ok")
    rec.candidates = [Candidate(content="to bob@gmail.com")]
    (d,) = run_filter(PiiFilter(roles=["assistant"], candidates=False), [rec])
    assert d == KEEP
    (d,) = run_filter(PiiFilter(roles=["assistant"]), [rec])
    assert isinstance(d, Edit) and d.reason == "redacted: email x1"
    assert d.record.messages[0].content == "from jane@gmail.com"
    assert d.record.candidates[0].content == "to [EMAIL]"


def test_drop_action_names_kinds_only():
    recs = [make_record("call +44 20 7946 0958 or mail a.b@gmail.com", "sure"), make_record("hello", "hi")]
    assert run_filter(PiiFilter(action="drop"), recs) == [Drop("pii: email, phone"), KEEP]


def test_records_without_text_are_kept_not_crashed():
    rec = make_record("q", "a")
    rec.messages = []
    assert run_filter(PiiFilter(), [rec]) == [KEEP]


def test_bad_options_are_config_errors():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PiiFilter(action="redact", kind=["email"])
    with pytest.raises(ValidationError, match="unknown phone region"):
        PiiFilter(phone_regions=["XX"])
    with pytest.raises(ValidationError):
        PiiFilter(kinds=["ssn"])


def test_luhn():
    assert luhn("4111111111111111") and not luhn("4111111111111112")
