"""Cards that carry a release's licenses and its audit: for people, for the Hub, for tools.

Every exported dataset gets three files beside its data: a Hugging Face dataset card
(`README.md`, YAML front matter the Hub reads), a Croissant JSON-LD file with PROV-O
provenance (`croissant.json`) and a `NOTICE` that collects every required notice. A student
gets a model card from `distill.cards.model`. All of it is derived from the records' provenance and
the audit report, sorted, with no timestamps: the same data always gives the same bytes.
Nothing secret reaches a card: only dataset names, model ids, plugin names and licenses.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.audit.base import DISCLAIMER, AuditReport
from distill.audit.report import plain_text, summary, table_cell, to_json, to_markdown
from distill.io.store import atomic_write
from distill.layout import AUDIT_JSON, AUDIT_MD, CARD_README, CROISSANT, DATASET_SIDECAR, NOTICE
from distill.licenses import Registry
from distill.records import LicenseTag, Record

_CROISSANT_CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "prov": "http://www.w3.org/ns/prov#",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
_COLUMNS = {"sft": ["id", "messages"], "preference": ["id", "prompt", "chosen", "rejected", "margin"]}


@dataclass
class ProvenanceSummary:
    """Who contributed to a set of records, counted: the card's sources and models sections."""

    sources: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, license) -> records
    #: (role, plugin, model, revision, license, how the terms were found) -> records
    models: dict[tuple[str, str, str, str, str, str], int] = field(default_factory=dict)
    stages: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, plugin) of generated events


def summarize(records: Iterable[Record]) -> ProvenanceSummary:
    s = ProvenanceSummary()
    for r in records:
        for source in {(src.dataset, src.license) for src in r.provenance.sources}:
            s.sources[source] = s.sources.get(source, 0) + 1
        for model in {
            (g.role, g.plugin, g.model, g.revision or "-", g.license, g.terms_source or "-")
            for g in r.provenance.generators
        }:
            s.models[model] = s.models.get(model, 0) + 1
        for key in {(e.stage, e.plugin or "-") for e in r.provenance.events if e.action == "generated"}:
            s.stages[key] = s.stages.get(key, 0) + 1
    return s


def hf_license_fields(tag: LicenseTag, registry: Registry) -> dict[str, Any]:
    """`license` (+ `license_name`, `license_link` when it is `other`) as the Hub expects them."""
    keys = sorted(set(registry.keys(tag.expression)))
    if len(keys) == 1:
        info = registry.info(keys[0])
        if info is not None and info.hf_license:
            return {"license": info.hf_license}
        link = info.url if info is not None and info.url else "NOTICE"
        return {"license": "other", "license_name": _slug(keys[0]), "license_link": link}
    return {"license": "other", "license_name": _slug(tag.expression), "license_link": "NOTICE"}


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9.]+", "-", text.lower())).strip("-")


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def front_matter(meta: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=True, allow_unicode=True, width=1000) + "---\n"


def dataset_card(name: str, records: list[Record], report: AuditReport, registry: Registry, fmt: str = "sft") -> str:
    """A Hugging Face dataset card: front matter for the Hub, then provenance and the audit."""
    prov = summarize(records)
    tag = report.license
    meta = {
        **hf_license_fields(tag, registry),
        "license_expression": tag.expression,
        "pretty_name": name,
        "source_datasets": sorted({d for d, _ in prov.sources}) or ["original"],
        "annotations_creators": ["machine-generated"],
        "language_creators": ["machine-generated"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(len(records))],
        "tags": sorted({"synthetic", "distill", "distillation"}),
        # The export is a `save_to_disk` folder; this tells the Hub's `load_dataset` which files
        # are the data (beside it lie JSON cards the loader would otherwise pick by extension).
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data-*.arrow"}]}],
    }
    lines = [
        front_matter(meta),
        f"# {plain_text(name)}",
        "",
        f"Synthetic {fmt} dataset made with distill: {len(records)} records, each with its own provenance "
        "(sources, every model that wrote or judged it, every stage's decision) and license tag.",
        "",
        f"> {DISCLAIMER}",
        "",
        "## License",
        "",
        f"- effective license: `{tag.expression}`",
        f"- use: {tag.use}",
        f"- attribution required: {'yes' if tag.attribution else 'no'}",
        f"- share-alike: {'yes' if tag.share_alike else 'no'}",
    ]
    if tag.restrictions:
        lines.append(f"- output restrictions passed on: {', '.join(sorted(tag.restrictions))}")
    if tag.name_prefixes:
        lines.append(f"- a model trained on it must have a name beginning: {', '.join(sorted(tag.name_prefixes))}")
    lines.append("- notices: see `NOTICE`")
    lines += ["", "## Sources", "", "| dataset | license | records |", "|---|---|---:|"]
    lines += [f"| {table_cell(d)} | `{lic}` | {n} |" for (d, lic), n in sorted(prov.sources.items())] or [
        "| - | - | 0 |"
    ]
    lines += [
        "",
        "## Models",
        "",
        "| role | plugin | model | revision | license | terms found by | records |",
        "|---|---|---|---|---|---|---:|",
    ]
    lines += [
        f"| {role} | {table_cell(plugin)} | {table_cell(model)} | {table_cell(rev)} | `{lic}` | {table_cell(how)} | {n} |"
        for (role, plugin, model, rev, lic, how), n in sorted(prov.models.items())
    ] or ["| - | - | - | - | - | - | 0 |"]
    lines += ["", to_markdown(report, level=2)]
    return "\n".join(lines)


def notice(name: str, report: AuditReport, registry: Registry) -> str:
    """Every notice, attribution and passed-on restriction the release's licenses require."""
    lines = [
        f"NOTICE for {name}",
        "",
        "This release contains material under the terms listed below. It was compiled by distill from",
        f"its license registry (version {report.registry_version}) and each record's provenance.",
        DISCLAIMER,
        "",
    ]
    for use in sorted(report.licenses, key=lambda u: u.license):
        info = registry.info(use.license)
        title = f"{use.license}" + (f": {info.name}" if info and info.name else "")
        lines += [title, "-" * len(title)]
        if use.url:
            lines.append(f"Terms: {use.url}")
        lines.append(
            f"Applies to {use.records} record(s); from: " + ("; ".join(c.describe() for c in use.contributors) or "-")
        )
        if info is None:
            lines.append("Not in the license registry: its terms are unknown.")
        else:
            lines += sorted(info.notices)
            if info.restriction != "none":
                lines.append(f"Restriction passed on to receivers: {info.restriction}.")
            if info.name_prefix:
                lines.append(f"A model trained with it must have a name beginning {info.name_prefix!r}.")
            if info.acceptable_use_policy:
                lines.append(f"Acceptable use policy: {info.acceptable_use_policy}")
            if info.monthly_user_cap:
                lines.append(f"Above {info.monthly_user_cap:,} monthly active users a separate license is needed.")
        lines.append("")
    return "\n".join(lines)


def croissant(
    name: str,
    records: list[Record],
    report: AuditReport,
    registry: Registry,
    fmt: str = "sft",
    files: Iterable[tuple[str, str, int]] = (),
) -> dict[str, Any]:
    """Croissant 1.0 metadata with PROV-O provenance and RAI fields; `files` is (name, sha256, size)."""
    prov = summarize(records)
    files = sorted(files)
    urls = sorted({u.url or u.license for u in report.licenses})
    distribution: list[dict[str, Any]] = [
        {
            "@type": "cr:FileObject",
            "@id": f,
            "name": f,
            "contentUrl": f,
            "sha256": digest,
            "contentSize": f"{size} B",
            "encodingFormat": "application/vnd.apache.arrow.file",
        }
        for f, digest, size in files
    ]
    source = {"fileSet": {"@id": "data"}} if files else {}
    fields = []
    for col in _COLUMNS.get(fmt, ["id"]):
        f: dict[str, Any] = {
            "@type": "cr:Field",
            "@id": f"records/{col}",
            "name": col,
            "dataType": "sc:Float" if col == "margin" else "sc:Text",
        }
        if col not in ("id", "margin"):
            f["repeated"] = True
            f["subField"] = [
                {"@type": "cr:Field", "@id": f"records/{col}/{sub}", "name": sub, "dataType": "sc:Text"}
                for sub in ("role", "content")
            ]
        if source:
            f["source"] = {**source, "extract": {"column": col}}
        fields.append(f)
    if files:
        distribution.append(
            {
                "@type": "cr:FileSet",
                "@id": "data",
                "name": "data",
                "containedIn": [{"@id": f} for f, _, _ in files],
                "encodingFormat": "application/vnd.apache.arrow.file",
                "includes": "data-*.arrow",
            }
        )
    models = sorted(prov.models.items())
    return {
        "@context": _CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": name,
        "description": f"Synthetic {fmt} dataset made with distill ({len(records)} records).",
        "license": urls,
        "sc:usageInfo": (
            f"License: {report.license.expression} (use: {report.license.use}). Audit for "
            f"{summary(report)}: {report.verdict}. See NOTICE. {DISCLAIMER}"
        ),
        "distribution": distribution,
        "recordSet": [{"@type": "cr:RecordSet", "@id": "records", "name": "records", "field": fields}],
        "prov:wasDerivedFrom": [
            {"@type": "prov:Entity", "@id": f"source:{d}", "name": d, "license": lic, "prov:value": n}
            for (d, lic), n in sorted(prov.sources.items())
        ],
        "prov:wasGeneratedBy": [
            {"@type": "prov:Activity", "@id": f"stage:{st}:{plugin}", "name": st, "prov:used": plugin, "prov:value": n}
            for (st, plugin), n in sorted(prov.stages.items())
        ],
        "prov:wasAttributedTo": [
            {
                "@type": "prov:SoftwareAgent",
                "@id": f"model:{role}:{model}:{rev}:{lic}",
                "name": model,
                "prov:hadRole": role,
                "version": rev,
                "license": lic,
                "plugin": plugin,
                "prov:value": n,
                **({"description": f"terms found by: {how}"} if how != "-" else {}),
            }
            for (role, plugin, model, rev, lic, how), n in models
        ],
        "rai:dataCollection": (
            "Synthetic: prompts derived from the seed sets in prov:wasDerivedFrom, answered, "
            "judged and filtered by the models in prov:wasAttributedTo; every record carries "
            "its own provenance."
        ),
        "rai:dataCollectionType": ["Synthetic"],
        "rai:machineAnnotationTools": sorted({m for (_, _, m, _, _, _) in prov.models}),
    }


def _data_files(path: Path) -> list[tuple[str, str, int]]:
    out = []
    for p in sorted(path.glob("*.arrow")):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out.append((p.name, h.hexdigest(), p.stat().st_size))
    return out


def write_dataset_cards(
    path: Path, name: str, records: list[Record], report: AuditReport, registry: Registry, fmt: str = "sft"
) -> list[Path]:
    """Write the cards (`distill.layout.CARD_FILES`: README.md, croissant.json, NOTICE and the
    audit as `distill audit --json` and `distill audit` print it) and the dataset's sidecar into
    an exported dataset's folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    carded = report.model_copy(update={"target": "."})
    texts = {
        CARD_README: dataset_card(name, records, report, registry, fmt),
        CROISSANT: json.dumps(
            croissant(name, records, report, registry, fmt, _data_files(path)), indent=2, sort_keys=True
        )
        + "\n",
        NOTICE: notice(name, report, registry),
        DATASET_SIDECAR: json.dumps(
            {
                "name": name,
                "format": fmt,
                "records": len(records),
                "license": report.license.expression,
                "license_tag": report.license.model_dump(mode="json"),
                "registry_version": report.registry_version,
                "audit": {"use": report.release.use, "what": report.release.what, "verdict": report.verdict},
            },
            indent=2,
            sort_keys=True,
        )
        + "\n",
        AUDIT_JSON: to_json(carded),  # no local paths in what is published
        AUDIT_MD: to_markdown(carded),
    }
    for file, text in texts.items():
        for debris in path.glob(f".{file}.*.tmp"):  # left by a run killed while it wrote this card
            debris.unlink(missing_ok=True)
        atomic_write(path / file, text.encode())
    return [path / f for f in texts]
