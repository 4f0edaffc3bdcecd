"""What a model says about its own terms: GGUF metadata, its card's front matter, a LICENSE file.

Registry rules are written about ids; the weights carry their publisher's own statement,
which knows about variants no rule has seen. Every reading says *where* it was found, so a
report can show it, and a reading that names something the registry does not know is kept
as such (never mapped to a lookalike).

Only local files are read, never the network: a model folder, a GGUF file, or the snapshot a
Hugging Face cache already holds for a hub id.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from distill.errors import ConfigError, PluginError
from distill.layout import CARD_README as CARD
from distill.licenses import Registry
from distill.models.embedded import EMBEDDED, gguf_path

LICENSE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "NOTICE", "NOTICE.md", "NOTICE.txt")


@dataclass(frozen=True)
class SelfDeclared:
    """One statement a model makes about its terms: `license` is the registry's reading of
    `said` (None when the registry has no such terms or the text matched none or several)."""

    license: str | None
    said: str
    how: str


def model_files(model: str, base_dir: Path) -> tuple[list[Path], Path | None, str | None]:
    """(GGUF files, folder holding a card and LICENSE files, hub id whose cache to read)."""
    if model == EMBEDDED:
        try:
            return [gguf_path()], None, None
        except PluginError:  # the embedded model is not installed: nothing to read
            return [], None, None
    path = Path(model).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if path.is_file() and path.suffix == ".gguf":
        return [path], path.parent, None
    if path.is_dir():
        return sorted(path.glob("*.gguf")), path, None
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return [], None, model
    return [], None, None


def read_own_terms(model: str, base_dir: Path, reg: Registry) -> list[SelfDeclared]:
    """Everything the model says about its terms, in the order it is trusted: GGUF metadata,
    then the card, then LICENSE/NOTICE files (first in the folder, then in the HF cache)."""
    ggufs, folder, hub_id = model_files(model, base_dir)
    found = [s for g in ggufs[:1] if (s := gguf_license(g, reg)) is not None]
    places: list[tuple[Path, str | None]] = [(folder, None)] if folder is not None else []
    snapshot = cached_snapshot(hub_id) if hub_id is not None else None
    if snapshot is not None:
        places.append((snapshot, f"the Hugging Face cache of {hub_id}"))
    for place, where in places:
        card = card_terms(place / CARD, reg, where)
        found += [card] if card else []
        found += list(license_files(place, reg, where))
    return found


def own_license(model: str, base_dir: Path, reg: Registry) -> str | None:
    """The first terms the model states that the registry can read (None: it states none)."""
    return next((s.license for s in read_own_terms(model, base_dir, reg) if s.license is not None), None)


def map_name(name: str, reg: Registry) -> str | None:
    """A card's or GGUF's license name as a registry id or SPDX expression, if it is one."""
    key = reg.by_alias(name)
    if key is not None:
        return key
    try:
        return reg.normalize(name)
    except ConfigError:
        return None


def gguf_license(path: Path, reg: Registry) -> SelfDeclared | None:
    """`general.license` of a GGUF file (the gguf package reads the header; no weights load)."""
    if importlib.util.find_spec("gguf") is None:
        return None
    import gguf

    try:
        field = gguf.GGUFReader(str(path)).fields.get("general.license")
        value = field.contents() if field is not None else None
    except Exception:  # a truncated or foreign file says nothing
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    return SelfDeclared(map_name(value, reg), value, f"GGUF metadata general.license = {value!r} in {path.name}")


def card_terms(path: Path, reg: Registry, where: str | None = None) -> SelfDeclared | None:
    """The license a Hugging Face card's front matter declares (`license_name` before `license`,
    since `license: other` defers to it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict):
        return None
    said: str | None = None
    for field in ("license_name", "license"):
        name = meta.get(field)
        if isinstance(name, list) and len(name) == 1:
            name = name[0]
        if not isinstance(name, str) or not name.strip() or name == "other":
            continue
        said = said or name
        mapped = map_name(name, reg)
        if mapped is not None:
            return SelfDeclared(mapped, name, f"model card front matter {field}: {name} in {where or _short(path)}")
    if said is None:
        return None
    return SelfDeclared(None, said, f"model card front matter license: {said} in {where or _short(path)}")


def license_files(folder: Path, reg: Registry, where: str | None = None) -> Iterator[SelfDeclared]:
    """LICENSE and NOTICE files, identified by the registry's `text_markers` (one match only)."""
    for name in LICENSE_FILES:
        path = folder / name
        try:
            text = path.read_text(encoding="utf-8", errors="replace")[:200_000]
        except OSError:
            continue
        matches = reg.identify_text(text)
        place = f"{name} in {where or folder.name}"
        if len(matches) == 1:
            yield SelfDeclared(matches[0], matches[0], f"the text of {place}")
        elif matches:
            yield SelfDeclared(None, " or ".join(matches), f"{place} matches several licenses ({', '.join(matches)})")
        elif name.startswith(("LICENSE", "LICENCE")):
            yield SelfDeclared(
                None, "unrecognised license text", f"{place}: a license text the registry cannot identify"
            )


def cached_snapshot(hub_id: str) -> Path | None:
    """The folder of the snapshot the local Hugging Face cache holds for `hub_id` (main
    revision), without any network call; None when huggingface_hub or the snapshot is absent."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in (CARD, *LICENSE_FILES):
        try:
            hit = try_to_load_from_cache(hub_id, name)
        except Exception:  # not a valid repo id
            return None
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def _short(path: Path) -> str:
    """A file by its folder's name: provenance and cards are published, local paths are not."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
