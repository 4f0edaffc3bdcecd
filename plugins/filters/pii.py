"""Personal data and secrets: find e-mail addresses, phone numbers, IP addresses, payment
card numbers and API keys, then redact them or drop the record.

A detected value never leaves this module: reasons, events and errors say only which kinds
were found and how many distinct values, never the values themselves. Each detector
validates what its pattern finds (phone numbers with libphonenumber's matcher, addresses
with `ipaddress`, card numbers with the Luhn checksum and a card network prefix) because a
redaction filter that fires on version numbers, dates or ISBNs would damage good data.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from typing import Literal

from pydantic import Field, field_validator

from distill.filter import KEEP, Decision, Drop, Edit, Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Record, Role

Kind = Literal["email", "phone", "ip", "credit-card", "api-key"]
KINDS: tuple[Kind, ...] = ("email", "phone", "ip", "credit-card", "api-key")
PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "ip": "[IP_ADDRESS]",
    "credit-card": "[CREDIT_CARD]",
    "api-key": "[API_KEY]",
}
#: When two findings overlap the earlier kind here wins: a key is not also a phone number.
_PRIORITY: tuple[Kind, ...] = ("api-key", "email", "credit-card", "ip", "phone")

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,})(?![\w-])"
)
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:])")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w])")
_KEYS = [
    re.compile(p)
    for p in (
        r"\bsk-(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic (sk-ant-...)
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key id
        r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
        r"\bgithub_pat_[A-Za-z0-9_]{22,}",  # GitHub
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
        r"\bAIza[0-9A-Za-z_-]{35}",  # Google
        r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}",  # Stripe
        r"\bhf_[A-Za-z0-9]{30,}",
        r"\bglpat-[A-Za-z0-9_-]{20,}",  # Hugging Face, GitLab
        r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",  # JWT
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    )
]
_TOKEN = re.compile(r"(?<![\w-])[A-Za-z0-9_-]{32,}(?![\w-])")
#: Card network prefixes (IIN ranges): a Luhn-valid number outside them is an id, not a card.
_CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9]|[3-6]|7[01]|720)|3[47]|3(?:0[0-5]|[689])|6(?:011|5|4[4-9]|2)|35")
_LENIENCY = Literal["possible", "valid", "strict-grouping", "exact-grouping"]


class PiiFilter(Filter):
    """Redact personal data and secrets with placeholders, or drop records that hold any."""

    name = "pii"

    class Options(Options):
        action: Literal["redact", "drop"] = Field(
            "redact", description="Replace findings with placeholders such as [EMAIL], or drop the record."
        )
        kinds: list[Kind] = Field(list(KINDS), description="What to look for.")
        roles: list[Role] = Field(["system", "user", "assistant", "tool"], description="Messages to scan.")
        candidates: bool = Field(
            True,
            description="Also scan the candidates' answers (the rejected answers of preference data are exported too).",
        )
        phone_regions: list[str] = Field(
            ["US"],
            description="Regions whose national formats are recognised "
            "(ISO 3166 codes); numbers written with +country code always are.",
        )
        phone_leniency: _LENIENCY = Field("valid", description="libphonenumber's matcher leniency.")
        allow_domains: list[str] = Field(
            ["example.com", "example.org", "example.net", "example", "test", "invalid", "localhost"],
            description="E-mail domains (and their subdomains) that are placeholders, not personal data.",
        )
        private_ips: bool = Field(
            False,
            description="Also treat loopback, private and documentation "
            "addresses (127.0.0.1, 10.0.0.0/8, ...) as personal data.",
        )
        entropy_tokens: bool = Field(
            True,
            description="Treat long random-looking tokens (32+ characters "
            "mixing upper case, lower case and digits) as secrets.",
        )
        min_entropy: float = Field(4.0, ge=0, description="Bits per character such a token needs.")

        @field_validator("phone_regions")
        @classmethod
        def _regions(cls, value: list[str]) -> list[str]:
            import phonenumbers

            out = [r.upper() for r in value]
            bad = [r for r in out if r not in phonenumbers.SUPPORTED_REGIONS]
            if bad:
                raise ValueError(f"unknown phone region(s) {', '.join(bad)}: use ISO 3166 codes such as US, GB, DE")
            return out

        @field_validator("allow_domains")
        @classmethod
        def _domains(cls, value: list[str]) -> list[str]:
            return [d.lower().strip(".") for d in value]

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        return [self.decide(r) for r in records]

    def decide(self, record: Record) -> Decision:
        texts = self._texts(record)
        found = [self.find(t) for t in texts]
        if not any(found):
            return KEEP
        distinct: dict[str, set[str]] = {}
        for text, spans in zip(texts, found):
            for start, end, kind in spans:
                distinct.setdefault(kind, set()).add(text[start:end])
        kinds = [k for k in KINDS if k in distinct]
        if self.options.action == "drop":
            return Drop(f"pii: {', '.join(kinds)}")
        redacted = iter([redact(t, s) for t, s in zip(texts, found)])
        new = record.model_copy(deep=True)
        for m in new.messages:
            if m.role in self.options.roles:
                m.content = next(redacted)
        if self.options.candidates:
            for c in new.candidates:
                c.content = next(redacted)
        return Edit(new, "redacted: " + ", ".join(f"{k} x{len(distinct[k])}" for k in kinds))

    def _texts(self, record: Record) -> list[str]:
        texts = [m.content for m in record.messages if m.role in self.options.roles]
        if self.options.candidates:
            texts += [c.content for c in record.candidates]
        return texts

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, kind) findings in `text`, in order."""
        spans: list[tuple[int, int, str]] = []
        for kind in _PRIORITY:
            if kind not in self.options.kinds:
                continue
            for start, end in getattr(self, "_" + kind.replace("-", "_"))(text):
                if all(end <= s or start >= e for s, e, _ in spans):
                    spans.append((start, end, kind))
        return sorted(spans)

    def _email(self, text: str) -> list[tuple[int, int]]:
        allowed = self.options.allow_domains
        return [
            m.span()
            for m in _EMAIL.finditer(text)
            if not any(m[1].lower() == d or m[1].lower().endswith("." + d) for d in allowed)
        ]

    def _phone(self, text: str) -> list[tuple[int, int]]:
        import phonenumbers

        leniency = getattr(phonenumbers.Leniency, self.options.phone_leniency.upper().replace("-", "_"))
        spans = set()
        for region in self.options.phone_regions:
            spans.update((m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency))
        return sorted(spans)

    def _ip(self, text: str) -> list[tuple[int, int]]:
        out = []
        for pattern in (_IPV6, _IPV4):
            for m in pattern.finditer(text):
                if ":" in m[0] and len(re.findall(r"[0-9A-Fa-f.]+", m[0])) < 2:
                    continue  # `::2` in a slice, `a::b`: too little to be an address someone uses
                try:
                    addr = ipaddress.ip_address(m[0])
                except ValueError:
                    continue
                if addr.is_global or self.options.private_ips:
                    out.append(m.span())
        return out

    def _credit_card(self, text: str) -> list[tuple[int, int]]:
        out = []
        for m in _CARD.finditer(text):
            separators = set(re.findall(r"\D", m[0]))
            digits = re.sub(r"\D", "", m[0])
            if len(separators) <= 1 and _CARD_PREFIX.match(digits) and luhn(digits):
                out.append(m.span())
        return out

    def _api_key(self, text: str) -> list[tuple[int, int]]:
        spans = [m.span() for p in _KEYS for m in p.finditer(text)]
        if self.options.entropy_tokens:
            spans += [m.span() for m in _TOKEN.finditer(text) if looks_random(m[0], self.options.min_entropy)]
        return spans


def redact(text: str, spans: list[tuple[int, int, str]]) -> str:
    for start, end, kind in reversed(spans):
        text = text[:start] + PLACEHOLDERS[kind] + text[end:]
    return text


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def looks_random(token: str, min_entropy: float) -> bool:
    """A long token that mixes upper case, lower case and digits the way generated secrets
    do. Identifiers such as `AbstractFactoryBean2Impl` mix them too, but in words: few
    capitals and few changes of character class. Hex digests and UUIDs use one case.
    About 2% of random 32-character tokens fail these tests, so they are a net under the
    prefixed patterns, not a guarantee."""
    letters = [c for c in token if c.isalpha()]
    upper = sum(c.isupper() for c in letters)
    if not letters or not any(c.isdigit() for c in token) or min(upper, len(letters) - upper) < 0.25 * len(letters):
        return False
    switches = sum(_class(a) != _class(b) for a, b in zip(token, token[1:]))
    return switches >= 0.45 * (len(token) - 1) and shannon_entropy(token) >= min_entropy


def _class(ch: str) -> int:
    return 0 if ch.isdigit() else 1 if ch.isupper() else 2 if ch.islower() else 3


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


@hookimpl
def register_filters(register) -> None:
    register(PiiFilter)
