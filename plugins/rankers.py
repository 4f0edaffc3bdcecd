"""First-party rankers: a reward function, an LLM judge, and a reward model."""

from __future__ import annotations

import importlib
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from distill.errors import PluginError
from distill.hookspecs import hookimpl
from distill.models.folders import model_identity
from distill.plugin import Options, PluginContext
from distill.ranker import Judge, Ranker, candidates_of
from distill.records import Generator, Message, Record
from distill.task import Reject
from distill.teacher import ChatRequest

RewardFn = Callable[..., float]


def load_callable(spec: str, base_dir: Path | None = None, what: str = "reward function") -> RewardFn:
    """`package.module:function`, or `path/to/file.py:function` (relative to the config's folder),
    named explicitly in the config: nothing is discovered. `what` names it in errors."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{what} {spec!r} must be written 'package.module:function' or 'path/to/file.py:function'")
    try:
        obj: Any = (
            _module_from_file(module_name, base_dir)
            if module_name.endswith(".py")
            else importlib.import_module(module_name)
        )
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise PluginError(f"cannot load {what} {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise PluginError(f"{what} {spec!r} is not callable")
    return obj


def is_file_spec(spec: str) -> bool:
    return spec.partition(":")[0].endswith(".py")


def _module_from_file(path_text: str, base_dir: Path | None) -> Any:
    """A config's own reward file, loaded under a name derived from its path (two configs' `rubric.py`
    stay apart); importing it again returns the same module."""
    import hashlib
    import importlib.util
    import sys

    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    path = path.resolve()
    name = f"distill_user_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise ImportError(f"no file {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class RewardFunctionRanker(Ranker):
    """Scores each candidate with a Python function `f(prompt, response, **kwargs) -> float`.

    `prompt` is the list of messages as dicts. Subclass and override `reward` to register a
    reward function as a plugin of its own, or name any function with `function:`.
    """

    name = "reward-function"

    class Options(Options):
        function: str | None = Field(
            None,
            description="'package.module:function' or 'path/to/file.py:function' (relative to the config) to call.",
        )
        kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for it.")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        f = self.options.function
        # A file is found relative to the config's folder, which setup() brings.
        self._fn: RewardFn | None = load_callable(f) if f and not is_file_spec(f) else None
        if f is None and type(self).reward is RewardFunctionRanker.reward:
            raise PluginError("reward-function ranker: set `function: package.module:function`")

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if self.options.function and is_file_spec(self.options.function):
            self._fn = load_callable(self.options.function, context.base_dir)

    def reward(self, prompt: list[dict[str, str]], response: str) -> float:
        assert self._fn is not None
        return float(self._fn(prompt, response, **self.options.kwargs))

    def score_batch(self, records: list[Record], judge: Judge | None) -> list[list[float] | Reject]:
        out: list[list[float] | Reject] = []
        for r in records:
            prompt = [m.model_dump() for m in r.prompt()]
            out.append([self.reward(prompt, c.content) for c in candidates_of(r)])
        return out


SCORE_PROMPT = """Rate the assistant's answer to the user's question.

Rubric: {rubric}

Question:
{question}

Answer:
{answer}

Reply with JSON only: {{"score": <integer from {low} to {high}>}}"""

PAIR_PROMPT = """Two assistants answered the same question. Which answer is better?

Rubric: {rubric}

Question:
{question}

Answer A:
{a}

Answer B:
{b}

Reply with JSON only: {{"winner": "A"}} or {{"winner": "B"}} or {{"winner": "tie"}}"""

_INT = re.compile(r"-?\d+(?:\.\d+)?")


class JudgeRanker(Ranker):
    """An LLM judge: a rubric score per candidate, or pairwise comparisons run in both orders
    (A/B then B/A) so the judge's preference for a position cancels out."""

    name = "judge"
    needs_judge = True
    concurrent_batches = True  # the options are all it keeps

    class Options(Options):
        mode: Literal["score", "pairwise"] = "score"
        rubric: str = Field(
            "Helpful, correct, concise, and follows any instructions given.", description="What a good answer is."
        )
        scale_min: int = 1
        scale_max: int = 10
        structured: bool = Field(True, description="Ask for JSON with a JSON-schema response_format.")
        max_candidates: int = Field(4, ge=2, description="Pairwise cost grows as n*(n-1); cap n.")

        @model_validator(mode="after")
        def _scale(self) -> JudgeRanker.Options:
            if self.scale_max <= self.scale_min:
                raise ValueError("scale_max must be greater than scale_min")
            return self

    def _format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        if not self.options.structured:
            return None
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}

    def score_batch(self, records: list[Record], judge: Judge | None) -> list[list[float] | Reject]:
        if judge is None:
            raise PluginError("judge ranker needs a judge model: set the rank stage's `teacher`")
        return self._scores(records, judge) if self.options.mode == "score" else self._pairwise(records, judge)

    def _question(self, r: Record) -> str:
        return "\n".join(m.content for m in r.prompt() if m.role == "user")

    def _scores(self, records: list[Record], judge: Judge) -> list[list[float] | Reject]:
        o = self.options
        fmt = self._format(
            {
                "type": "object",
                "properties": {"score": {"type": "integer"}},
                "required": ["score"],
                "additionalProperties": False,
            }
        )
        requests, owners = [], []
        for i, r in enumerate(records):
            for c in candidates_of(r):
                text = SCORE_PROMPT.format(
                    rubric=o.rubric, question=self._question(r), answer=c.content, low=o.scale_min, high=o.scale_max
                )
                requests.append(
                    ChatRequest(messages=[Message(role="user", content=text)], n=1, seed=0, response_format=fmt)
                )
                owners.append(i)
        answers = judge.ask(requests)
        out: list[list[float] | Reject] = [[] for _ in records]
        for i, samples in zip(owners, answers):
            if isinstance(out[i], Reject):
                continue
            value = self._read_score(samples[0].text)
            out[i] = (
                Reject(f"judge output unparseable: {samples[0].text[:60]!r}") if value is None else out[i] + [value]
            )
        return out

    def _read_score(self, text: str) -> float | None:
        o = self.options
        value: Any = None
        try:
            value = json.loads(text).get("score")
        except (ValueError, AttributeError):
            m = _INT.search(text)
            value = m.group(0) if m else None
        try:
            score = float(value)
        except (TypeError, ValueError):
            return None
        return score if o.scale_min <= score <= o.scale_max else None

    def _pairwise(self, records: list[Record], judge: Judge) -> list[list[float] | Reject]:
        o = self.options
        fmt = self._format(
            {
                "type": "object",
                "properties": {"winner": {"enum": ["A", "B", "tie"]}},
                "required": ["winner"],
                "additionalProperties": False,
            }
        )
        requests, plan = [], []
        for i, r in enumerate(records):
            cands = candidates_of(r)[: o.max_candidates]
            for x, y in itertools.permutations(range(len(cands)), 2):  # both orders
                text = PAIR_PROMPT.format(
                    rubric=o.rubric, question=self._question(r), a=cands[x].content, b=cands[y].content
                )
                requests.append(
                    ChatRequest(messages=[Message(role="user", content=text)], n=1, seed=0, response_format=fmt)
                )
                plan.append((i, x, y))
        answers = judge.ask(requests)
        wins: list[list[float]] = [[0.0] * len(candidates_of(r)) for r in records]
        bad: dict[int, str] = {}
        for (i, x, y), samples in zip(plan, answers):
            winner = self._read_winner(samples[0].text)
            if winner is None:
                bad.setdefault(i, samples[0].text[:60])
            elif winner == "A":
                wins[i][x] += 1
            elif winner == "B":
                wins[i][y] += 1
            else:
                wins[i][x] += 0.5
                wins[i][y] += 0.5
        out: list[list[float] | Reject] = []
        for i, r in enumerate(records):
            n = min(len(candidates_of(r)), o.max_candidates)
            if i in bad:
                out.append(Reject(f"judge output unparseable: {bad[i]!r}"))
            elif len(candidates_of(r)) < 2:
                out.append(Reject("pairwise judging needs at least two candidates"))
            else:  # fraction of comparisons won; candidates past the cap score -1
                games = 2 * (n - 1)
                out.append([wins[i][k] / games if k < n else -1.0 for k in range(len(candidates_of(r)))])
        return out

    @staticmethod
    def _read_winner(text: str) -> str | None:
        try:
            w = json.loads(text).get("winner")
        except (ValueError, AttributeError):
            m = re.search(r"\b(A|B|tie)\b", text)
            w = m.group(1) if m else None
        return w if w in ("A", "B", "tie") else None


class RewardModelRanker(Ranker):
    """Scores candidates with a sequence-classification reward model (e.g. one trained by
    distill's reward-model trainer): the logit of its single output on prompt + answer."""

    name = "reward-model"

    class Options(Options):
        model: str = Field(description="Local folder of a sequence-classification model.")
        batch_size: int = Field(8, ge=1)
        max_length: int = Field(1024, ge=16)

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        from pathlib import Path

        path = Path(self.options.model).expanduser()
        if not path.is_absolute():
            path = context.base_dir / path
        if not (path / "config.json").is_file():
            raise PluginError(f"reward-model ranker: {path} is not a transformers model folder (no config.json)")
        self._path = path
        self.options.model = str(path)  # replicas in Ray actors get the resolved folder
        if context.remote_engine:  # executor: ray: the model loads in each actor
            return
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(str(path))
            self._model = AutoModelForSequenceClassification.from_pretrained(  # never a pickled checkpoint
                str(path), dtype=torch.float32, use_safetensors=True
            ).eval()
        except Exception as exc:
            raise PluginError(f"reward-model ranker: could not load {path}: {type(exc).__name__}: {exc}") from exc
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._model.config.pad_token_id = self._tok.pad_token_id

    def generators(self) -> list[Generator]:
        """The reward model judges every record it ranks: its identity and terms (a distill-trained
        one declares the license it inherited) go into provenance."""

        info = model_identity(str(self._path), "reward-model ranker", progress=False)
        return [
            Generator(
                role="judge",
                plugin=self.name,
                plugin_version=self.plugin_version,
                model=info.model,
                revision=info.revision,
                file_hash=info.file_hash,
                license=info.license,
            )
        ]

    def score_batch(self, records: list[Record], judge: Judge | None) -> list[list[float] | Reject]:
        import torch

        texts, owners = [], []
        for i, r in enumerate(records):
            prompt = [m.model_dump() for m in r.prompt()]
            for c in candidates_of(r):
                convo = prompt + [{"role": "assistant", "content": c.content}]
                texts.append(self._tok.apply_chat_template(convo, tokenize=False))
                owners.append(i)
        scores: list[float] = []
        with torch.inference_mode():
            for k in range(0, len(texts), self.options.batch_size):
                enc = self._tok(
                    texts[k : k + self.options.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.options.max_length,
                )
                scores.extend(self._model(**enc).logits[:, 0].float().tolist())
        out: list[list[float] | Reject] = [[] for _ in records]
        for i, s in zip(owners, scores):
            out[i].append(s)  # type: ignore[union-attr]
        return out

    def close(self) -> None:
        self._model = None


@hookimpl
def register_rankers(register) -> None:
    register(RewardFunctionRanker)
    register(JudgeRanker)
    register(RewardModelRanker)
