"""Which terms a teacher or judge model is under, decided once when the teacher starts.

A record's license is only as good as the license of every model that wrote or judged it,
and most users never declare one. So the core resolves it, in this order, and the first
answer wins:

1. the teacher's own `license:` option (what the user declared);
2. the config's `models:` entries (globs on the model id);
3. what the model says about itself (distill.models.metadata): its GGUF `general.license`,
   its card's front matter (a local folder, or the local Hugging Face cache of a hub id), a
   LICENSE or NOTICE file beside the weights;
4. what the plugin reports, when it is not `LicenseRef-Unspecified` (a distill-trained
   folder's marker, the official OpenAI endpoint);
5. the registry's rules, which grant terms only to ids whose terms were checked;
6. otherwise `LicenseRef-Unspecified`, with a warning that names the teacher and says how to
   declare it; when a family pattern covers the id, the warning says "probably <family>" and
   lists the terms its members carry. Nothing is guessed from a name.

A declaration (1, 2) that the model's own statement (3) contradicts still wins, but the
contradiction is recorded in provenance and the audit asks for an acknowledgement.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distill.layout import CARD_README
from distill.licenses import UNSPECIFIED, ModelRule, Registry
from distill.models.metadata import SelfDeclared, card_terms, read_own_terms

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
    #: The family a pattern says the model probably belongs to, and the terms its members carry.
    family: str | None = None
    candidates: tuple[str, ...] = ()
    #: What the model says about itself where that contradicts `license` (a declaration).
    model_says: SelfDeclared | None = None
    #: Every statement the model makes about its terms, trusted first first.
    own: tuple[SelfDeclared, ...] = field(default=(), compare=False)

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
    found = card_terms(folder / CARD_README, reg)
    return found.license if found is not None else None


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
    return resolve_model(
        ids=_ids(model, options),
        provider=provider_of(plugin, options),
        declared=getattr(options, "license", None),
        declared_where=f"teachers.{key}.options.license",
        reported=reported,
        reported_by=f"the {plugin} plugin",
        config_models=config_models,
        reg=reg,
        base_dir=base_dir,
    )


def resolve_model(
    *,
    ids: list[str],
    provider: str = "local",
    declared: Any = None,
    declared_where: str = "the config",
    reported: str | None = None,
    reported_by: str = "",
    config_models: Iterable[ModelRule] = (),
    reg: Registry,
    base_dir: Path,
) -> Terms:
    """The terms of any model (a teacher, a judge, a base model, a path given to `distill
    licenses explain`): `ids[0]` is where its files are looked for."""
    own = tuple(s for i in ids[:2] for s in read_own_terms(i, base_dir, reg))
    said = next((s for s in own if s.license is not None), None)
    if isinstance(declared, str) and declared and declared != UNSPECIFIED:
        license = reg.normalize(declared)
        return Terms(license, f"declared in {declared_where}", model_says=_contradiction(license, said, reg), own=own)
    match = reg.match_model(ids, provider, first=config_models)
    if match.rule is not None and match.from_config:
        license = match.rule.license
        return Terms(license, match.where, model_says=_contradiction(license, said, reg), own=own)
    if said is not None and said.license is not None:
        return Terms(said.license, said.how, own=own)
    if reported and reported != UNSPECIFIED:
        return Terms(reported, f"reported by {reported_by}", own=own)
    if match.rule is not None:
        return Terms(match.rule.license, match.where, own=own)
    unread = "; ".join(s.how for s in own)
    if match.family is not None:
        fam = match.family
        how = f"no rule grants terms to this id; probably the {fam.family} family, whose members carry different terms"
        return Terms(UNSPECIFIED, how + (f" ({unread})" if unread else ""), fam.family, tuple(fam.candidates), own=own)
    return Terms(UNSPECIFIED, f"unknown ({unread})" if unread else "unknown", own=own)


def _contradiction(declared: str, said: SelfDeclared | None, reg: Registry) -> SelfDeclared | None:
    """What the model says, when it names terms the declaration leaves out (a declaration that
    adds terms is only more careful)."""
    if said is None or said.license is None:
        return None
    return said if set(reg.keys(said.license)) - set(reg.keys(declared)) else None


def unknown_warning(key: str, plugin: str, model: str, terms: Terms | None = None) -> str:
    family = ""
    if terms is not None and terms.family:
        family = (
            f" It is probably a {terms.family} model, whose members carry different terms "
            f"({', '.join(terms.candidates)}): check its card and declare the right one."
        )
    return (
        f"teacher {key!r} ({plugin} plugin, model {model!r}): its terms are unknown, so everything it "
        f"writes or judges is tagged {UNSPECIFIED} and `distill audit` cannot clear a release of it.{family} "
        f"Declare them with `license:` in teachers.{key}.options (an SPDX expression or a LicenseRef- "
        "id, e.g. LicenseRef-Llama-3.1), or add a `models:` entry; a re-run takes its answers "
        "from the request cache"
    )


def _ids(model: str, options: Any) -> list[str]:
    """The configured id first (a local path is where the files are), then the reported one (a
    local folder's reported id may be its repository's name)."""
    configured = getattr(options, "model", None)
    ids = [configured] if isinstance(configured, str) and configured else []
    return ids + [model] if model not in ids else ids
