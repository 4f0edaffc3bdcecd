"""Quality heuristics: length bounds (words and tokens), refusals and model
self-identification, empty or truncated answers, repeated n-grams.

Each is its own filter so a config turns them on one by one and `distill inspect` counts
them apart. Reasons put what varies after the first ": ", except where the count should be
per pattern: a refusal's key names the phrase that matched.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from distill.errors import PluginError
from distill.filter import Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options, PluginContext
from distill.records import Record
from distill_plugins.filters._text import MissingField, TextField, field_text, normalize, words


class LengthFilter(Filter):
    """Drop records whose prompt or response is outside word-count or token-count bounds.

    Tokens are counted with the student's own tokenizer, because a context budget is
    spent in tokens: a bound in words over- or under-counts code and non-English text.
    """

    name = "length"

    class Options(Options):
        field: TextField = Field("response", description="Which text to measure.")
        min_words: int = Field(1, ge=0, description="Fewest whitespace-separated words.")
        max_words: int | None = Field(None, ge=1, description="Most words; no bound when unset.")
        min_tokens: int | None = Field(None, ge=0, description="Fewest tokens; needs `tokenizer`.")
        max_tokens: int | None = Field(None, ge=1, description="Most tokens; needs `tokenizer`.")
        tokenizer: str | None = Field(
            None,
            description="A tokenizer.json file or a local model folder holding one; relative "
            "paths resolve against the config file's folder.",
        )

        @model_validator(mode="after")
        def _bounds(self) -> LengthFilter.Options:
            if self.max_words is not None and self.max_words < self.min_words:
                raise ValueError("max_words must be >= min_words")
            lo, hi = self.min_tokens, self.max_tokens
            if lo is not None and hi is not None and hi < lo:
                raise ValueError("max_tokens must be >= min_tokens")
            if (self.min_tokens is not None or self.max_tokens is not None) and not self.tokenizer:
                raise ValueError(
                    "min_tokens/max_tokens need `tokenizer`: the path of a tokenizer.json "
                    "or of a local model folder holding one (the student's)"
                )
            return self

    def __init__(self, options=None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._tokenizer: Any = None

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if self.options.tokenizer:
            self._tokenizer = load_tokenizer(self.options.tokenizer, context.base_dir)

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:  # used without a pipeline: paths are relative to the cwd
            self._tokenizer = load_tokenizer(self.options.tokenizer or "", Path.cwd())
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def check(self, record: Record) -> bool | tuple[bool, str]:
        o = self.options
        try:
            text = field_text(record, o.field)
        except MissingField as exc:
            return False, exc.drop().reason
        n = len(text.split())
        if n < o.min_words:
            return False, f"{o.field} too short: {n} < {o.min_words} words"
        if o.max_words is not None and n > o.max_words:
            return False, f"{o.field} too long: {n} > {o.max_words} words"
        if o.min_tokens is None and o.max_tokens is None:
            return True
        n = self.count_tokens(text)
        if o.min_tokens is not None and n < o.min_tokens:
            return False, f"{o.field} too short: {n} < {o.min_tokens} tokens"
        if o.max_tokens is not None and n > o.max_tokens:
            return False, f"{o.field} too long: {n} > {o.max_tokens} tokens"
        return True


def load_tokenizer(spec: str, base_dir: Path) -> Any:
    """A `tokenizers.Tokenizer` from a tokenizer.json or a model folder; PluginError naming
    the path when it is not there."""
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        where = f"model folder {path} has no tokenizer.json" if path.is_dir() else f"{path} not found"
        raise PluginError(f"length filter: tokenizer {where}")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise PluginError(
            "length filter: token bounds need the tokenizers library: pip install 'distill[filters]'"
        ) from None
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:
        raise PluginError(f"length filter: cannot load tokenizer {file}: {exc}") from None


REFUSALS = [
    "I'm sorry, but I can't",
    "I'm sorry, but I cannot",
    "I am sorry, but I cannot",
    "I'm sorry, I can't",
    "I apologize, but I cannot",
    "I apologize, but I can't",
    "I cannot assist",
    "I can't assist",
    "I cannot help with",
    "I can't help with",
    "I cannot fulfill",
    "I can't fulfill",
    "I cannot comply",
    "I can't comply",
    "I cannot provide",
    "I can't provide",
    "I'm not able to provide",
    "I am unable to",
    "I'm unable to",
    "I must decline",
    "I won't be able to help",
    "it is not appropriate for me to",
    "as a responsible AI",
    "against my programming",
]

SELF_IDENTIFICATION = [
    "As an AI language model",
    "As a language model",
    "As a large language model",
    "As an AI assistant",
    "As an AI developed by",
    "I am an AI language model",
    "I am ChatGPT",
    "I'm ChatGPT",
    "trained by OpenAI",
    "developed by OpenAI",
    "created by OpenAI",
    "I am Claude",
    "I'm Claude",
    "made by Anthropic",
    "created by Anthropic",
    "I am Gemini",
    "I'm Gemini",
    "my knowledge cutoff",
]


class _PhraseFilter(Filter):
    """Drop records whose text contains one of a list of phrases, counted per phrase.

    Phrases and text are compared in `normalize`d form (case, punctuation and curly quotes
    folded) and on word boundaries, so "I’m sorry, but I can’t" matches "I'm sorry, but I
    can't" and "as an ai" would not match "as an aim"."""

    DEFAULT: list[str] = []

    class Options(Options):
        field: TextField = Field("response", description="Which text to search.")
        phrases: list[str] | None = Field(None, description="Replaces the built-in phrase list.")
        extra_phrases: list[str] = Field(default_factory=list, description="Added to the phrase list.")

        @field_validator("phrases", "extra_phrases")
        @classmethod
        def _not_blank(cls, value: list[str] | None) -> list[str] | None:
            for p in value or []:
                if not normalize(p):
                    raise ValueError(f"phrase {p!r} has no letters or digits to match")
            return value

    def __init__(self, options=None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        listed = self.DEFAULT if self.options.phrases is None else self.options.phrases
        # display form, normalised form; the display form becomes part of the inspect key
        self.patterns = [
            (p.casefold().replace(": ", ":"), f" {normalize(p)} ") for p in [*listed, *self.options.extra_phrases]
        ]

    def check(self, record: Record) -> bool | tuple[bool, str]:
        try:
            text = f" {normalize(field_text(record, self.options.field))} "
        except MissingField as exc:
            return False, exc.drop().reason
        for shown, folded in self.patterns:
            if folded in text:
                return False, f'{self.name} "{shown}": in {self.options.field}'
        return True


class RefusalFilter(_PhraseFilter):
    """Drop refusals ("I'm sorry, but I can't ..."): a student should learn to answer."""

    name = "refusal"
    DEFAULT = REFUSALS


class SelfIdentificationFilter(_PhraseFilter):
    """Drop answers where the teacher names itself or its maker ("As an AI language model",
    "I am ChatGPT"): the student would learn to claim another model's identity."""

    name = "self-identification"
    DEFAULT = SELF_IDENTIFICATION


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")


class TruncationFilter(Filter):
    """Drop empty answers and answers cut off mid-way: stopped at the token limit, or with a
    code block left open (a sign of the same cut even when the finish reason was lost)."""

    name = "truncation"

    class Options(Options):
        finish_reasons: list[str] = Field(
            ["length", "max_tokens"],
            description="Finish reasons that mean the answer was cut off; empty to skip this check.",
        )
        code_fences: bool = Field(True, description="Drop answers with an unclosed ``` or ~~~ block.")

    def check(self, record: Record) -> bool | tuple[bool, str]:
        response = record.response()
        if response is None:
            return False, MissingField("no response to read").drop().reason
        if not response.strip():
            return False, "empty response: blank or whitespace only"
        reason = finish_reason(record, response)
        if reason is not None and reason in self.options.finish_reasons:
            return False, f"truncated: stopped at the token limit (finish_reason {reason!r})"
        if self.options.code_fences:
            line = unclosed_fence(response)
            if line is not None:
                return False, f"unclosed code fence: opened on line {line}"
        return True


def finish_reason(record: Record, response: str) -> str | None:
    """The finish reason of the answer the record carries: the candidate whose text it is
    (after ranking, the chosen one), else the record's metadata (a single sample)."""
    for c in record.candidates:
        if c.content == response:
            return c.finish_reason
    value = record.metadata.get("finish_reason")
    return value if isinstance(value, str) else None


def unclosed_fence(text: str) -> int | None:
    """The 1-based line of a fenced code block that is never closed, following CommonMark
    (a closing fence uses the same character, at least as many, and nothing after it);
    fences may be indented, as in list items."""
    opened: tuple[str, int, int] | None = None
    for i, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m is None:
            continue
        fence, rest = m.groups()
        if opened is None:
            if not (fence[0] == "`" and "`" in rest):
                opened = (fence[0], len(fence), i)
        elif fence[0] == opened[0] and len(fence) >= opened[1] and not rest.strip():
            opened = None
    return None if opened is None else opened[2]


_GOPHER_DUP = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
_GOPHER_TOP = {2: 0.20, 3: 0.18, 4: 0.16}


class RepetitionFilter(Filter):
    """Drop degenerate, looping answers, with Gopher's repetition rules (Rae et al., 2021).

    Ratios are over the characters of the words (punctuation and spacing left out). On a
    short answer one repeated phrase is a large fraction, so the n-gram rules apply only from
    `min_words` words; the repeated-line rule applies to any length."""

    name = "repetition"

    class Options(Options):
        field: TextField = Field("response", description="Which text to examine.")
        min_words: int = Field(50, ge=1, description="Shorter texts skip the n-gram rules.")
        dup_ngrams: dict[int, float] = Field(
            default_factory=lambda: dict(_GOPHER_DUP),
            description="n -> most of the characters that may lie in repeated n-grams (Gopher's defaults).",
        )
        top_ngrams: dict[int, float] = Field(
            default_factory=lambda: dict(_GOPHER_TOP),
            description="n -> most of the characters the single most frequent n-gram may cover.",
        )
        max_line_repeats: int | None = Field(5, ge=1, description="Most times one line may occur.")
        min_line_chars: int = Field(20, ge=1, description="Shorter lines (`}`, `---`) are not counted.")

        @field_validator("dup_ngrams", "top_ngrams")
        @classmethod
        def _thresholds(cls, value: dict[int, float]) -> dict[int, float]:
            for n, frac in value.items():
                if n < 1 or not 0 < frac <= 1:
                    raise ValueError(f"{n}: {frac}: n must be >= 1 and the fraction in (0, 1]")
            return dict(sorted(value.items()))

    def check(self, record: Record) -> bool | tuple[bool, str]:
        o = self.options
        try:
            text = field_text(record, o.field)
        except MissingField as exc:
            return False, exc.drop().reason
        if o.max_line_repeats is not None:
            lines = Counter(s for s in (line.strip() for line in text.splitlines()) if len(s) >= o.min_line_chars)
            if lines:
                _, count = lines.most_common(1)[0]
                if count > o.max_line_repeats:
                    return False, f"repeated line: one line occurs {count} times (max {o.max_line_repeats})"
        toks = words(text)
        total = sum(len(w) for w in toks)
        if len(toks) < o.min_words or not total:
            return True
        for n, limit in o.top_ngrams.items():
            frac = top_ngram_chars(toks, n) / total
            if frac > limit:
                return False, (
                    f"frequent n-gram: the most frequent {n}-gram covers {frac:.0%} of characters (max {limit:.0%})"
                )
        for n, limit in o.dup_ngrams.items():
            frac = duplicate_ngram_chars(toks, n) / total
            if frac > limit:
                return False, f"repeated n-grams: {frac:.0%} of characters in repeated {n}-grams (max {limit:.0%})"
        return True


def top_ngram_chars(toks: list[str], n: int) -> int:
    """Characters of the words covered by the most frequent n-gram (Gopher). Overlapping
    occurrences ("la la la") cover each word once, so the fraction never exceeds 1."""
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0
    top = Counter(grams).most_common(1)[0][0]
    covered = {j for i, g in enumerate(grams) if g == top for j in range(i, i + n)}
    return sum(len(toks[j]) for j in covered)


def duplicate_ngram_chars(toks: list[str], n: int) -> int:
    """Characters in n-grams that repeat an earlier one, counting each word once (Gopher):
    after a repeat the scan jumps past it, so overlapping repeats are not double counted."""
    seen: set[tuple[str, ...]] = set()
    chars = i = 0
    while i <= len(toks) - n:
        gram = tuple(toks[i : i + n])
        if gram in seen:
            chars += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


@hookimpl
def register_filters(register) -> None:
    for cls in (LengthFilter, RefusalFilter, SelfIdentificationFilter, TruncationFilter, RepetitionFilter):
        register(cls)
