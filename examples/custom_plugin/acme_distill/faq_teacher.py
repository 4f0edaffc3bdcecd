"""A teacher that answers from an FAQ table instead of a model: no weights, no network.

It answers a question with the most specific table entry whose keywords all occur in it,
so it is deterministic and costs nothing, which makes it a good teacher for tests and a
way to turn a vetted support FAQ into training data.

What every teacher owes distill, and how this one pays it:

* `model_info()` names what wrote the text, exactly enough to check its terms later: here
  the table (its name, version and the sha256 of its bytes) and the license the table
  declares. A table that declares none is reported as `LicenseRef-Unspecified`, never
  guessed, so the run warns and `distill audit` refuses to clear it.
* `sampling()` lists every option that changes the answers: it goes into provenance and
  into the request cache's key, so changing `fallback` cannot serve stale cached answers.
* `generate()` returns, for each request, `request.n` (else the configured `n`) samples,
  derived only from the question and the request's seed, so a resumed run writes exactly
  what the killed one would have.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distill.errors import PluginError
from distill.hookspecs import Register, hookimpl
from distill.plugin import Options, PluginContext
from distill.teacher import ChatRequest, ModelInfo, Sample, Teacher

UNSPECIFIED = "LicenseRef-Unspecified"
_WORD = re.compile(r"\w+")


class FaqEntry(BaseModel):
    """One row of the table: all `keywords` must occur in a question for `answers` to apply."""

    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(min_length=1)
    answers: list[str] = Field(min_length=1)

    @field_validator("keywords")
    @classmethod
    def _single_words(cls, keywords: list[str]) -> list[str]:
        for k in keywords:
            if not _WORD.fullmatch(k.casefold()):
                raise ValueError(f"keyword {k!r} must be one word (letters, digits, '_')")
        return [k.casefold() for k in keywords]


class FaqTable(BaseModel):
    """The table file's format; its `license` covers the answers, so it is the teacher's."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str | None = None
    license: str = UNSPECIFIED
    entries: list[FaqEntry] = Field(min_length=1)

    def answers_for(self, question: str) -> list[str]:
        """The answers of the matching entry with the most keywords (the first on a tie); [] if none."""
        words = set(_WORD.findall(question.casefold()))
        best: FaqEntry | None = None
        for entry in self.entries:
            if set(entry.keywords) <= words and (best is None or len(entry.keywords) > len(best.keywords)):
                best = entry
        return best.answers if best else []


def _seed(*parts: Any) -> int:
    """A stable 32-bit number from JSON-able parts (Python's hash() changes between runs)."""
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16)


class FaqTeacher(Teacher):
    """Answers each request from an FAQ table; n samples are successive answer variants."""

    name = "acme-faq"

    class Options(Options):
        table: str | None = Field(
            None,
            description="A JSON FAQ table; a relative path resolves against the "
            "config file's folder. Default: the Acme router FAQ "
            "shipped in this package (CC0-1.0).",
        )
        license: str | None = Field(
            None, description="Terms of the table's answers (SPDX), overriding what the table declares."
        )
        n: int = Field(
            1,
            ge=1,
            le=16,
            description="Samples per request: the matched entry's answer variants, from a seeded starting point.",
        )
        seed: int = Field(0, description="Base seed for requests that carry none (pipeline requests always do).")
        fallback: str = Field(
            "",
            description="The answer when no entry matches. Empty by default, so the "
            "`response` task rejects the record as `empty response` rather "
            "than teaching the student a non-answer.",
        )

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._base_dir = Path.cwd()  # until setup() says where the config is
        self._table: FaqTable | None = None
        self._sha256: str | None = None

    def setup(self, context: PluginContext) -> None:
        """Resolve the table against the config's folder and load it now, so a missing or
        malformed table stops the run before the stage starts, naming the file."""
        super().setup(context)
        self._base_dir = context.base_dir
        self._load()

    def _load(self) -> FaqTable:
        if self._table is not None:
            return self._table
        if self.options.table is None:
            where = "the acme_distill package's faq.json"
            data = (resources.files("acme_distill") / "faq.json").read_bytes()
        else:
            path = Path(self.options.table).expanduser()
            path = path if path.is_absolute() else self._base_dir / path
            where = str(path)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise PluginError(
                    f"{self.name} teacher: cannot read the FAQ table {where}: {exc.strerror or exc}"
                ) from None
        try:
            self._table = FaqTable.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise PluginError(f"{self.name} teacher: invalid FAQ table {where}: {at}: {first['msg']}") from None
        self._sha256 = hashlib.sha256(data).hexdigest()
        return self._table

    def model_info(self) -> ModelInfo:
        table = self._load()
        return ModelInfo(
            model=table.name,
            revision=table.version,
            file_hash=self._sha256,
            license=self.options.license or table.license,
        )

    def sampling(self) -> dict[str, Any]:
        return self.options.model_dump(include={"n", "seed", "fallback"})

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:
        table = self._load()
        out: list[list[Sample]] = []
        for req in requests:
            question = next((m.content for m in reversed(req.messages) if m.role == "user"), "")
            count = req.n or self.options.n
            answers = table.answers_for(question)
            if not answers:
                out.append([Sample(text=self.options.fallback, finish_reason="stop") for _ in range(count)])
                continue
            base = req.seed if req.seed is not None else _seed(self.options.seed, question)
            start = _seed(base) % len(answers)
            out.append([Sample(text=answers[(start + k) % len(answers)], finish_reason="stop") for k in range(count)])
        self.usage.requests += len(requests)
        return out


@hookimpl
def register_teachers(register: Register) -> None:
    register(FaqTeacher)
