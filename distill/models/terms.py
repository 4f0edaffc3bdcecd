"""Which terms a teacher or judge model is under, decided once when the teacher starts.

A record's license is only as good as the license of every model that wrote or judged it,
and most users never declare one. So the core resolves it, in this order, and the first
answer wins:

1. the teacher's own `license:` option (what the user declared);
2. the config's `models:` entries (globs on the model id);
3. what the plugin reports, when it is not `LicenseRef-Unspecified` (a local folder's
   `distill-model.json`, the embedded model, the official OpenAI endpoint);
4. a local model folder's Hugging Face card (`README.md` front matter `license:`);
5. the registry's rules on provider and model id (`gpt-*` at OpenAI, `meta-llama/Llama-3.1-*`);
6. otherwise `LicenseRef-Unspecified`, with a warning that names the teacher and says how to
   declare it. Nothing is guessed from a name that no rule covers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from distill.errors import ConfigError
from distill.licenses import UNSPECIFIED, ModelRule, Registry, model_matches

_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "google",
}
_LOCAL_PLUGINS = {"transformers", "vllm"}


@dataclass(frozen=True)
class Terms:
    """A model's resolved terms and how they were found (reports and warnings say so)."""

    license: str
    how: str

    @property
    def known(self) -> bool:
        return self.license != UNSPECIFIED


def provider_of(plugin: str, options: Any) -> str:
    """`openai`, `anthropic`, `google` for their APIs, `self-hosted` for a server on a private
    or local address, `local` for in-process engines, else the host or the plugin's name."""
    if plugin in _LOCAL_PLUGINS:
        return "local"
    if not hasattr(options, "base_url"):
        return plugin
    base_url = getattr(options, "base_url", None)
    if base_url is None:
        return "openai" if plugin == "openai" else plugin
    host = (urlsplit(str(base_url)).hostname or "").lower()  # never the URL: it may hold credentials
    if host in _HOSTS:
        return _HOSTS[host]
    if host == "localhost" or host.endswith(".local"):
        return "self-hosted"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host or plugin
    return "self-hosted" if addr.is_private or addr.is_loopback else host


def card_license(folder: Path, reg: Registry) -> str | None:
    """The license a model folder's Hugging Face card declares, mapped onto the registry."""
    try:
        text = (folder / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    try:
        meta = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict):
        return None
    names = [meta.get("license_name"), meta.get("license")]
    for name in names:
        if isinstance(name, list):
            name = name[0] if len(name) == 1 else None
        if not isinstance(name, str) or not name or name == "other":
            continue
        key = reg.by_alias(name)
        if key is not None:
            return key
        try:
            return reg.normalize(name)
        except ConfigError:
            continue
    return None


def resolve_terms(
    *,
    key: str,
    plugin: str,
    options: Any,
    reported: str | None,
    model: str,
    config_models: Iterable[ModelRule],
    reg: Registry,
    base_dir: Path,
) -> Terms:
    """Resolve the terms of the teacher configured as `teachers.<key>` (see the module doc)."""
    declared = getattr(options, "license", None)
    if isinstance(declared, str) and declared and declared != UNSPECIFIED:
        return Terms(reg.normalize(declared), f"declared in teachers.{key}.options.license")
    provider = provider_of(plugin, options)
    ids = _ids(model, options)
    config_models = list(config_models)
    for i, rule in enumerate(config_models):
        if _matches(rule, ids, provider):
            return Terms(rule.license, f"config models[{i}] ({rule.model})")
    if reported and reported != UNSPECIFIED:
        return Terms(reported, f"reported by the {plugin} plugin")
    folder = _folder(options, base_dir)
    if folder is not None:
        found = card_license(folder, reg)
        if found:
            return Terms(found, f"declared by the model card {folder / 'README.md'}")
    for rule in reg.models:
        if _matches(rule, ids, provider):
            where = f" at {provider}" if rule.provider else ""
            return Terms(rule.license, f"registry rule {rule.model}{where}")
    return Terms(UNSPECIFIED, "unknown")


def unknown_warning(key: str, plugin: str, model: str) -> str:
    return (
        f"teacher {key!r} ({plugin} plugin, model {model!r}): its terms are unknown, so everything it "
        f"writes or judges is tagged {UNSPECIFIED} and `distill audit` cannot clear a release of it. "
        f"Declare them with `license:` in teachers.{key}.options (an SPDX expression or a LicenseRef- "
        "id, e.g. LicenseRef-Llama-3.1), or add a `models:` entry; a re-run takes its answers "
        "from the request cache"
    )


def _ids(model: str, options: Any) -> list[str]:
    """The reported id and the configured one: a local folder's reported id may be its name."""
    ids = [model]
    configured = getattr(options, "model", None)
    if isinstance(configured, str) and configured not in ids:
        ids.append(configured)
    return ids


def _matches(rule: ModelRule, ids: list[str], provider: str) -> bool:
    if rule.provider is not None and rule.provider != provider:
        return False
    return any(model_matches(rule.model, i) for i in ids)


def _folder(options: Any, base_dir: Path) -> Path | None:
    model = getattr(options, "model", None)
    if not isinstance(model, str) or not model or model == "embedded":
        return None
    path = Path(model).expanduser()
    path = path if path.is_absolute() else base_dir / path
    return path if path.is_dir() else None
