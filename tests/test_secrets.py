"""One secret rule, asked by every place that keeps secrets out: the same names are secret to
the config digest, error messages, the request cache's keys and a student's lineage and cards."""

from __future__ import annotations

import pytest

from distill.cache.store import key_parts
from distill.config.loader import digest_view, interpolated_values, parse_config
from distill.errors import ConfigError, PluginError, scrub
from distill.records import Message
from distill.secrets import is_secret_name, redact
from distill.teacher import ChatRequest

SECRET_NAMES = [
    "OPENAI_API_KEY",
    "HF_TOKEN",
    "api_key",
    "apiKey",
    "x-api-key",
    "Authorization",
    "auth",
    "auth_token",
    "bearer",
    "Bearer_Token",
    "password",
    "db_passwd",
    "client_secret",
    "aws_secret_access_key",
    "hub_token",
    "access_token",
    "credentials",
    "authToken",
    "oauth",
]
PLAIN_NAMES = [
    "max_tokens",
    "max_new_tokens",
    "tokenizer",
    "tokens_per_minute",
    "author",
    "model",
    "temperature",
    "top_p",
    "seed",
    "base_url",
    "num_instructions",
]
VALUE = "sk-test-0123456789abcdef"


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_secret_name_is_secret_everywhere(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_secret_name(name)
    env = name.upper().replace("-", "_")
    monkeypatch.setenv(env, VALUE)
    # config digest: the placeholder stays, the value never enters a stored digest
    assert digest_view({"x": f"${{{env}}}"}) == {"x": f"${{{env}}}"}
    # error messages and logs
    assert VALUE not in scrub(f"request failed with {VALUE}")
    # request-cache keys: a teacher that puts it in sampling() is a bug, refused
    with pytest.raises(PluginError, match="looks like a secret"):
        key_parts({"plugin": "t"}, {name: VALUE}, ChatRequest(messages=[Message(role="user", content="hi")]))
    # lineage and cards: published with the model
    assert VALUE not in str(redact({"trl_args": {name: VALUE}}))


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_a_plain_name_is_kept_everywhere(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not is_secret_name(name)
    env = name.upper()
    monkeypatch.setenv(env, "value-12345678")
    assert digest_view({"x": f"${{{env}}}"}) == {"x": "value-12345678"}
    assert scrub("value-12345678") == "value-12345678"
    parts = key_parts({"plugin": "t"}, {name: 1}, ChatRequest(messages=[Message(role="user", content="hi")]))
    assert parts["sampling"] == {name: 1}
    assert redact({"trl_args": {name: 5}}) == {"trl_args": {name: 5}}


def test_a_config_error_never_shows_an_interpolated_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_VALUE", VALUE)
    raw = {"output": "out", "seeds": [], "stages": [], "seed": "${SOME_VALUE}"}
    assert interpolated_values(raw) == {VALUE: "${SOME_VALUE}"}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert VALUE not in str(err.value)
