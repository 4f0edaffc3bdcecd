"""`distill licenses explain MODEL_OR_PATH` and `distill licenses list`: the registry, asked
directly, so a user can see why a teacher got the terms it got before running anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape as _e
from rich.table import Table

from distill.audit.target import settings_from
from distill.cli.output import print_error
from distill.config.loader import load_config
from distill.errors import DistillError
from distill.licenses import UNSPECIFIED, LicenseInfo, ModelRule, Registry, active, builtin_registry
from distill.models.terms import Terms, resolve_model

licenses_app = typer.Typer(no_args_is_help=True, help="What the license registry says, and why.")
out = Console()


def _settings(config: Path | None) -> tuple[Registry, list[ModelRule]]:
    if config is None:
        return builtin_registry(), []
    settings = settings_from(load_config(config).raw, str(config))
    return settings.registry, settings.models


def _fail(exc: DistillError) -> None:
    print_error(exc)
    raise typer.Exit(2)


@licenses_app.command("explain")
def explain(
    model: Annotated[str, typer.Argument(help="A model id (org/name, gpt-4o), a local folder or a GGUF file.")],
    provider: Annotated[
        str, typer.Option(help="Who serves it: local, openai, anthropic, google, self-hosted or a plugin name.")
    ] = "local",
    license: Annotated[
        str | None, typer.Option("--license", help="A declaration to check against what the model says.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Apply this config's `licenses:` and `models:` sections.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which terms distill would assign to MODEL, and why; what they allow; what to declare if unknown."""
    try:
        reg, models = _settings(config)
        with active(reg):
            terms = resolve_model(
                ids=[model],
                provider=provider,
                declared=license,
                declared_where="--license",
                config_models=models,
                reg=reg,
                base_dir=Path.cwd(),
            )
            elsewhere = [r for r in reg.models if r.provider not in (None, provider) and r.matches([model], r.provider)]
    except DistillError as exc:
        _fail(exc)
    data = _explanation(model, provider, terms, reg, elsewhere)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    _print_explanation(data)


def _allows(key: str, info: LicenseInfo | None) -> dict[str, Any]:
    if info is None:
        return {"license": key, "known": False}
    return {"license": key, "known": True, **info.model_dump(exclude_defaults=True, exclude={"text_markers"})}


def _explanation(model: str, provider: str, terms: Terms, reg: Registry, elsewhere: list[ModelRule]) -> dict[str, Any]:
    keys = reg.keys(terms.license) if terms.known else []
    data: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "registry_version": reg.version,
        "license": terms.license,
        "known": terms.known,
        "why": terms.how,
        "model_says": [{"license": s.license, "said": s.said, "how": s.how} for s in terms.own],
        "terms": [_allows(k, reg.info(k)) for k in keys],
    }
    if terms.model_says is not None:
        data["conflict"] = (
            f"declared {terms.license}, but the model says {terms.model_says.license} ({terms.model_says.how}); "
            "`distill audit` asks for an acknowledgement (rule terms-conflict)"
        )
    if not terms.known:
        data["family"] = terms.family
        data["candidates"] = [_allows(k, reg.info(k)) for k in terms.candidates]
        data["at_other_providers"] = [
            {"provider": r.provider, "rule": r.model, "license": r.license} for r in elsewhere
        ]
        choose = f" (one of {', '.join(terms.candidates)})" if terms.candidates else ""
        data["declare"] = (
            f"read the model's card and declare its terms{choose}: `license: ID` in the teacher's options, "
            f'or a config entry `models: [{{model: "{model}", license: ID}}]`'
            + ("" if terms.candidates else "; an id the registry lacks goes under `licenses:` with its `use`")
        )
    return data


def _print_explanation(data: dict[str, Any]) -> None:
    style = "bold green" if data["known"] else "bold yellow"
    out.print(_e(f"{data['model']} (provider {data['provider']}, registry version {data['registry_version']})"))
    out.print(f"terms: [{style}]{_e(data['license'])}[/]")
    out.print(_e(f"why: {data['why']}"), highlight=False)
    if data["model_says"]:
        out.print("what the model says about itself:")
        for s in data["model_says"]:
            reading = s["license"] or "not a license the registry knows"
            out.print(_e(f"  - {reading}: {s['how']}"), highlight=False)
    else:
        out.print("what the model says about itself: nothing found locally (no GGUF, card or LICENSE file)")
    if "conflict" in data:
        out.print(_e(f"conflict: {data['conflict']}"), style="yellow", highlight=False)
    if data["terms"]:
        out.print(_terms_table("what these terms allow", data["terms"]))
    if not data["known"]:
        if data.get("family"):
            out.print(_e(f"probably a {data['family']} model; its members carry one of:"))
            out.print(_terms_table("candidates", data["candidates"]))
        for r in data.get("at_other_providers", []):
            out.print(_e(f"at {r['provider']}, rule {r['rule']} gives {r['license']} (use --provider {r['provider']})"))
        out.print(_e(f"declare: {data['declare']}"), highlight=False)
        out.print(f"until then everything it writes or judges is tagged {UNSPECIFIED} and no release clears")


def _terms_table(title: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    for col in ("license", "use", "restriction", "obligations", "url"):
        t.add_column(col, overflow="fold")
    for row in rows:
        if not row["known"]:
            t.add_row(_e(row["license"]), "unknown (counted as academic-only)", "", "", "")
            continue
        duties = [
            "attribution" if row.get("attribution") else "",
            "share-alike" if row.get("share_alike") else "",
            f"name starts with {row['name_prefix']!r}" if row.get("name_prefix") else "",
            f"under {row['monthly_user_cap']:,} monthly users" if row.get("monthly_user_cap") else "",
            f"acceptable-use policy {row['acceptable_use_policy']}" if row.get("acceptable_use_policy") else "",
        ]
        t.add_row(
            _e(row["license"]),
            row["use"],
            row.get("restriction", "none"),
            _e("; ".join(d for d in duties if d) or "-"),
            _e(row.get("url") or "-"),
        )
    return t


@licenses_app.command("list")
def list_registry(
    config: Annotated[Path | None, typer.Option(help="Include this config's `licenses:` and `models:`.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registry as JSON.")] = False,
) -> None:
    """The license registry in effect: its version, licenses, model rules and families."""
    try:
        reg, models = _settings(config)
    except DistillError as exc:
        _fail(exc)
    if as_json:
        data = reg.model_dump(mode="json", exclude_defaults=True)
        data["config_models"] = [m.model_dump(exclude_defaults=True) for m in models]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    out.print(f"license registry version {reg.version} ({len(reg.licenses)} licenses, {len(reg.models)} model rules)")
    t = Table(title="licenses")
    for col in ("id", "name", "use", "restriction", "family"):
        t.add_column(col, overflow="fold")
    for key, info in reg.licenses.items():
        t.add_row(_e(key), _e(info.name or ""), info.use, info.restriction, info.family or "")
    out.print(t)
    t = Table(title="model rules (first match wins; a config's `models:` come first)")
    for col in ("model", "provider", "license", "checked against"):
        t.add_column(col, overflow="fold")
    for rule in [*models, *reg.models]:
        t.add_row(_e(rule.model), rule.provider or "any", _e(rule.license), _e(rule.checked or "(config)"))
    out.print(t)
    t = Table(title="families (a match means: unknown, probably this family; declare it)")
    for col in ("family", "models", "candidates"):
        t.add_column(col, overflow="fold")
    for fam in reg.families:
        t.add_row(fam.family, _e(", ".join(fam.models)), _e(", ".join(fam.candidates)))
    out.print(t)
