"""The one rule for what looks like a secret, for every place that must keep secrets out.

Config digests and interpolation, error messages and logs, request-cache keys, a student's
lineage and the cards published with it all ask this module, so that a name one of them
treats as secret is secret to all. A name is secret when one of its words (split at `_`, `-`,
`.`, spaces and camelCase) is `key` or ends in it (`apikey`), or contains `token`, `secret`,
`passw`, `credential`, `auth`, `bearer`, ... Counts and tools named after tokens are not
secrets: `max_tokens`, `tokenizer`; nor is an `author`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

#: A word that contains one of these makes a name secret (`HF_TOKEN`, `authToken`, `oauth`, `PASSWD`).
SECRET_PARTS = ("token", "secret", "passw", "pwd", "credential", "auth", "bearer", "cookie", "signature")
#: ... unless it is one of these: counts and tools named after tokens, and authors.
NOT_SECRET = frozenset(
    {
        "tokens",
        "tokenizer",
        "tokenizers",
        "tokenize",
        "tokenized",
        "tokenization",
        "detokenize",
        "author",
        "authors",
        "authored",
        "authorship",
    }
)
#: Values shorter than this are not replaced in text: too many innocent strings would match.
MIN_SECRET_LENGTH = 6
REDACTED = "<redacted>"

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def words(name: str) -> list[str]:
    """`OPENAI_API_KEY` -> openai, api, key; `authToken` -> auth, token; `x-api-key` -> x, api, key."""
    return [w.lower() for w in _WORDS.findall(name)]


def is_secret_name(name: str) -> bool:
    """Whether a variable, option or header named `name` is expected to hold a secret: one of
    its words is `key` or ends in it (`apikey`), or contains a secret part (`token`, `auth`, ...)."""
    for w in words(str(name)):
        if w in NOT_SECRET:
            continue
        if w.endswith("key") or any(part in w for part in SECRET_PARTS):
            return True
    return False


def secret_paths(obj: Any, where: str = "") -> list[str]:
    """Every key path in a nested mapping or list whose key looks secret, e.g. `sampling.api_key`."""
    found: list[str] = []
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        path = f"{where}.{k}" if where else str(k)
        if isinstance(k, str) and is_secret_name(k):
            found.append(path)
        found += secret_paths(v, path)
    return found


def redact(obj: Any) -> Any:
    """A copy with the value of every secret-looking key replaced (empty values stay empty)."""
    if isinstance(obj, Mapping):
        return {k: REDACTED if is_secret_name(str(k)) and v else redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def environment_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Values of secret-named environment variables, each with the `$NAME` to show instead."""
    env = os.environ if environ is None else environ
    return {
        value: f"${name}" for name, value in env.items() if len(value) >= MIN_SECRET_LENGTH and is_secret_name(name)
    }


def replace_values(text: str, values: Mapping[str, str]) -> str:
    """`text` with each value replaced by its placeholder, longest first (a key inside a longer one)."""
    for value, placeholder in sorted(values.items(), key=lambda kv: -len(kv[0])):
        if len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, placeholder)
    return text
