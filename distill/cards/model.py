"""A trained student's model card: the license it inherits, where it came from, and its audit.

`distill.training.lineage` records the facts in `distill-model.json` beside the weights; this module
renders them as a Hugging Face model card (`README.md` with the front matter the Hub reads)
and, when the student has been audited, writes the audit into the card and a `NOTICE` beside
it. The card is rewritten whenever the audit is (after training, and by `distill audit`), so
it always shows the verdict under the release policy as configured now.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distill.audit.base import DISCLAIMER, AuditReport
from distill.audit.report import plain_text, to_markdown
from distill.cards.dataset import front_matter, hf_license_fields, notice
from distill.io.store import atomic_write
from distill.layout import CARD_README, NOTICE
from distill.licenses import Registry, active, student_tag
from distill.records import LicenseTag

_KINDS = {
    "adapter": "LoRA adapter (PEFT)",
    "reward-model": "reward model (sequence classification, one logit)",
    "model": "full model",
}


def _prefix_ok(name: str, prefix: str) -> bool:
    norm = lambda s: re.sub(r"[\s_\-]+", " ", s).lower()  # noqa: E731
    return norm(name.rsplit("/", 1)[-1]).startswith(norm(prefix))


def license_lines(name: str, tag: LicenseTag, base_model: str | None, base_model_license: str | None) -> list[str]:
    """The card's license section: what the student inherits and what that obliges."""
    lines = [
        f"> {DISCLAIMER}",
        "",
        "## License",
        "",
        f"- effective license: `{tag.expression}`",
        f"- use: {tag.use}",
        f"- base model: {plain_text(base_model or 'not declared')} (`{base_model_license or 'not declared'}`)",
        f"- attribution required: {'yes' if tag.attribution else 'no'}",
        f"- share-alike: {'yes' if tag.share_alike else 'no'}",
    ]
    if tag.restrictions:
        lines.append(f"- restrictions passed on: {', '.join(sorted(tag.restrictions))}")
    for p in sorted(tag.name_prefixes):
        lines.append(f"- required name prefix {p!r}: {'present' if _prefix_ok(name, p) else 'MISSING'}")
    lines += ["", "## Notices", ""] + ([f"- {n}" for n in sorted(tag.notices)] or ["None required."])
    if tag.unknown:
        lines += [
            "",
            f"Unknown to the license registry (counted as most restrictive): {', '.join(sorted(tag.unknown))}.",
        ]
    return lines


def model_card(
    name: str,
    dataset_tags: Iterable[LicenseTag],
    base_model: str | None,
    base_model_license: str | None,
    registry: Registry,
    *,
    datasets: Iterable[str] = (),
    report: AuditReport | None = None,
) -> str:
    """A card from licenses alone, for a student trained outside distill's trainers: it inherits
    its datasets' tags and its base model's terms."""

    with active(registry):
        tag = student_tag(dataset_tags, base_model_license)
    meta = _meta(tag, registry, base_model, "finetune", datasets)
    lines = [
        front_matter(meta),
        f"# {plain_text(name)}",
        "",
        "A student model distilled with distill. Its license combines the terms of every dataset it was "
        "trained on (their sources, and every model that wrote or judged them) and of its base model.",
        "",
    ]
    lines += license_lines(name, tag, base_model, base_model_license)
    if report is not None:
        lines += ["", to_markdown(report, level=2)]
    return "\n".join(lines) + "\n"


def _meta(
    tag: LicenseTag, registry: Registry, base_model: str | None, relation: str, datasets: Iterable[str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        **hf_license_fields(tag, registry),
        "license_expression": tag.expression,
        "tags": sorted({"distill", "distillation", "synthetic-data"}),
    }
    if base_model:
        meta["base_model"] = base_model
        meta["base_model_relation"] = relation
    if datasets:
        meta["datasets"] = sorted(set(datasets))
    return meta


def student_card(marker: dict[str, Any], registry: Registry, report: AuditReport | None = None) -> str:
    """The card of a student trained by distill, from its lineage marker (and its audit)."""
    tag = LicenseTag.model_validate(marker["license_tag"])
    base, parent = marker["base_model"], marker["parent"]
    relation = "adapter" if marker["kind"] == "adapter" else "finetune"
    meta = _meta(tag, registry, base["id"], relation, [d["name"] for d in marker["datasets"]])
    meta["tags"] = sorted({*meta["tags"], "trl", marker["trainer"]["name"]})
    name = marker["model"]
    lines = [
        front_matter(meta),
        f"# {plain_text(name)}",
        "",
        f"A {_KINDS[marker['kind']]} trained by distill's `{marker['trainer']['name']}` trainer, starting "
        f"from `{plain_text(parent['id'])}`. Its license combines the terms of its base model, of every dataset it "
        "was trained on (their sources, and every model that wrote or judged them) and of every model whose "
        "outputs trained it.",
        "",
    ]
    lines += license_lines(name, tag, base["id"], base.get("license"))
    lines += [
        "",
        "## Base model",
        "",
        f"- `{plain_text(base['id'])}` (revision {base.get('revision') or 'n/a'}, weights sha256 "
        f"`{base['file_hash']}`, license `{base['license']}`)",
        "",
        "## Datasets",
        "",
    ]
    for d in marker["datasets"]:
        declared = "" if d.get("license_declared") else " (not declared: counted as unspecified)"
        lines.append(
            f"- `{plain_text(d['name'])}`: {d['rows']} rows, sha256 `{d['digest'][:16]}...`, "
            f"license `{d['license_tag']['expression']}`{declared}"
        )
    if marker["influences"]:
        lines += ["", "## Models whose outputs trained it", ""]
        lines += [
            f"- {i['role']}: `{plain_text(str(i['id']))}` (license `{i.get('license')}`)" for i in marker["influences"]
        ]
    lines += [
        "",
        "## Training",
        "",
        f"- Steps in this run: {marker['global_step']}"
        + (f" (resumed from `{Path(marker['resumed_from']).name}`)" if marker.get("resumed_from") else ""),
    ]
    hw = marker.get("hardware") or {}
    if hw:
        procs = f" x {hw['processes']} processes" if hw.get("processes", 1) > 1 else ""
        lines.append(
            f"- Hardware: {hw.get('description')}{procs}; precision {hw.get('precision')}, gradient "
            f"checkpointing {'on' if hw.get('gradient_checkpointing') else 'off'}"
        )
        lines += [f"  - {r}" for r in hw.get("reasons", [])]
    libs = ", ".join(f"{k} {v}" for k, v in marker["trainer"]["libraries"].items())
    lines += [
        f"- Libraries: {libs}",
        "",
        "Options:",
        "",
        "```json",
        json.dumps(marker["options"], indent=2, default=str),
        "```",
        "",
        "## Metrics",
        "",
    ]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in marker["metrics"].items()]
    if len(marker["lineage"]) > 1:
        lines += ["", "## Lineage", ""]
        lines += [
            f"{n}. `{e['step']}` ({e['trainer']}) -> `{e['model']}`, {e['global_step']} steps"
            for n, e in enumerate(marker["lineage"], 1)
        ]
    lines += [""]
    if report is not None:
        lines += [to_markdown(report, level=2)]
    else:
        lines += ["## License audit", "", "Not audited yet: run `distill audit` on this folder before releasing it."]
    return "\n".join(lines) + "\n"


def write_student_cards(
    folder: Path, marker: dict[str, Any], registry: Registry, report: AuditReport | None = None
) -> list[Path]:
    """README.md (and, with an audit, NOTICE) in the student's folder."""
    written = [folder / CARD_README]
    atomic_write(written[0], student_card(marker, registry, report).encode())
    if report is not None:
        written.append(folder / NOTICE)
        atomic_write(written[1], notice(marker["model"], report, registry).encode())
    return written
