"""Structured output: answers that are JSON matching a schema the config names.

The schema is a JSON Schema written in the config, or a pydantic model named by
`package.module:Class` or `file.py:Class` (relative to the config). It reaches the teacher as
an OpenAI `response_format`, which the `openai` teacher sends and the `vllm` teacher enforces
with guided decoding; the `transformers` teacher cannot enforce it, and every answer, from any
teacher, is parsed and validated here: an invalid one is rejected with the validation error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from distill.errors import PluginError
from distill.hookspecs import hookimpl
from distill.plugin import Options, PluginContext
from distill.records import Candidate, Message, Record
from distill.task import MapTask, Reject
from distill.teacher import Sample
from distill_plugins.rankers import is_file_spec, load_callable

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
INSTRUCTION = "Reply with a JSON value and nothing else. It must match this JSON Schema:\n{schema}"


class StructuredTask(MapTask):
    """Answer each prompt with JSON that matches a schema; invalid answers are rejected."""

    name = "structured"

    class Options(Options):
        json_schema: dict[str, Any] | None = Field(None, description="The JSON Schema answers must match.")
        model: str | None = Field(
            None, description="A pydantic model, 'package.module:Class' or 'file.py:Class' (relative to the config)."
        )
        name: str = Field("answer", description="The schema's name in the request's response_format.")
        instruction: str = Field(
            INSTRUCTION, description="System prompt sent with every request; {schema} is the schema as JSON."
        )

        @model_validator(mode="after")
        def _one_schema(self) -> StructuredTask.Options:
            if (self.json_schema is None) == (self.model is None):
                raise ValueError("set exactly one of `json_schema` and `model`")
            return self

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._model: Any = None
        self._schema: dict[str, Any] | None = self.options.json_schema
        if self.options.model and not is_file_spec(self.options.model):
            self._load(None)
        if self._schema is not None:
            self._check_schema()

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        if self._schema is None:
            self._load(context.base_dir)
            self._check_schema()

    def _load(self, base_dir: Path | None) -> None:
        model = load_callable(self.options.model or "", base_dir, what="structured-output model")
        if not hasattr(model, "model_json_schema"):
            raise PluginError(f"structured task: {self.options.model!r} is not a pydantic model")
        self._model, self._schema = model, model.model_json_schema()

    def _check_schema(self) -> None:
        import jsonschema

        try:
            jsonschema.validators.validator_for(self._schema).check_schema(self._schema)
        except jsonschema.SchemaError as exc:
            raise PluginError(f"structured task: the schema is not a valid JSON Schema: {exc.message}") from None

    def build(self, record: Record) -> list[Message] | Reject:
        prompt = [m for m in record.prompt() if m.role != "system"]
        if not any(m.role == "user" and m.content.strip() for m in prompt):
            return Reject("no user message to answer")
        system = self.options.instruction.format(schema=json.dumps(self._schema, ensure_ascii=False))
        return [Message(role="system", content=system), *prompt]

    def response_format(self, record: Record) -> dict[str, Any] | None:
        return {"type": "json_schema", "json_schema": {"name": self.options.name, "schema": self._schema}}

    def validate(self, text: str) -> Any:
        """The answer as a JSON value, or ValueError with why it does not match."""
        import jsonschema

        body = text.strip()
        fenced = _FENCE.match(body)
        if fenced:
            body = fenced.group(1)
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if self._model is not None:
            try:
                return self._model.model_validate(value).model_dump(mode="json")
            except ValidationError as exc:
                err = exc.errors()[0]
                at = ".".join(str(p) for p in err["loc"]) or "the value"
                raise ValueError(f"does not match the schema: {at}: {err['msg']}") from None
        try:
            jsonschema.validate(value, self._schema or {})
        except jsonschema.ValidationError as exc:
            at = "/".join(str(p) for p in exc.absolute_path) or "the value"
            raise ValueError(f"does not match the schema: {at}: {exc.message}") from None
        return value

    def apply(self, record: Record, samples: list[Sample], generator: int) -> Record | Reject:
        valid: list[tuple[Sample, Any]] = []
        errors: list[str] = []
        for s in samples:
            try:
                valid.append((s, self.validate(s.text)))
            except ValueError as exc:
                errors.append(str(exc))
        if not valid:
            return Reject(errors[0] if errors else "no answer")
        texts = [json.dumps(v, ensure_ascii=False) for _, v in valid]
        record.messages = [
            *[m for m in record.prompt() if m.role != "system"],
            Message(role="assistant", content=texts[0]),
        ]
        if len(samples) > 1:
            record.candidates = [
                Candidate(content=t, generator=generator, finish_reason=s.finish_reason)
                for (s, _), t in zip(valid, texts)
            ]
        record.metadata["finish_reason"] = valid[0][0].finish_reason
        if errors:
            record.metadata["invalid_samples"] = len(errors)
        return record


@hookimpl
def register_tasks(register) -> None:
    register(StructuredTask)
