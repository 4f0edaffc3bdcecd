"""The teacher interface: chat requests in, sampled completions out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from distill.plugin import Options, Plugin
from distill.records import Generator, Message


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    #: Samples wanted for this request; None means the teacher's configured `n`.
    n: int | None = None
    #: Seed for this request, derived by the core from the run seed so a resumed batch
    #: samples exactly what the killed one would have.
    seed: int | None = None
    #: Structured output: `{"type": "json_schema", "json_schema": {...}}` as in the OpenAI API.
    #: Teachers that cannot enforce it still receive it and the task validates the answer.
    response_format: dict[str, Any] | None = None
    #: Continue the final message, whatever its role, instead of answering it: a final user
    #: message (often empty) makes a chat model write the user's turn (Magpie). A final
    #: assistant message is always continued (a prefix); this flag is for the other roles.
    continue_final: bool = False


class Sample(BaseModel):
    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    #: Log-probability of each generated token, where the engine offers them.
    logprobs: list[float] | None = None


class ModelInfo(BaseModel):
    """Enough about the model to check its terms later: id, exact weights, license."""

    model: str
    revision: str | None = None
    file_hash: str | None = None
    license: str = "LicenseRef-Unspecified"


class Usage(BaseModel):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def in_order(requests: list[ChatRequest], results: Iterator[tuple[int, list[Sample]]]) -> list[list[Sample]]:
    """`generate` for a teacher built on `iter_generate`: its results in request order."""
    out: list[list[Sample]] = [[] for _ in requests]
    for i, samples in results:
        out[i] = samples
    return out


def prefilled(prefix: str | None, text: str) -> str:
    """The whole answer to a request whose last message was an assistant `prefix` (prefill).

    An engine returns what follows the prefix; the answer is both. An engine that echoes the
    prefix back is not prefixed twice."""
    if not prefix:
        return text.strip()
    if text.lstrip().startswith(prefix):
        return text.strip()
    return (prefix + (text if text[:1].isspace() or not text else " " + text)).strip()


#: Marks where the final message's content ends while a chat template is rendered.
_END = "\u2063distill-end-of-content\u2063"


def continuation_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat template's text for `messages` up to the end of the final message's content,
    with no end-of-turn after it: what a model continues to write that message itself.

    `continue_final_message` in transformers finds the final content in the rendered text and
    cuts after it, which an empty content (Magpie's user turn) defeats; a marker does not."""
    last = messages[-1]
    probe = [*messages[:-1], {**last, "content": last["content"] + _END}]
    text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    if _END not in text:
        raise ValueError("the chat template dropped the final message's content; it cannot be continued")
    return text[: text.rindex(_END)]


class Teacher(Plugin):
    """Turns chat requests into completions. Subclasses implement `generate` and `model_info`."""

    kind: ClassVar[str] = "teacher"

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.usage = Usage()

    def model_info(self) -> ModelInfo:  # pragma: no cover - interface
        raise NotImplementedError

    def sampling(self) -> dict[str, Any]:
        """Sampling parameters that go into provenance (and the cache key)."""
        return {}

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:  # pragma: no cover
        """One list of samples per request, in request order."""
        raise NotImplementedError

    def iter_generate(self, requests: list[ChatRequest]) -> Iterator[tuple[int, list[Sample]]]:
        """Yield (request index, samples) as each request completes, in any order.

        The core caches each result the moment it is yielded, so when a batch fails halfway
        the requests that did complete are never paid for again. Teachers that finish
        requests one by one (API clients) override this; batch engines keep the default.
        """
        yield from enumerate(self.generate(requests))

    def cost_usd(self) -> float | None:
        """Dollars this teacher has been charged so far, at the prices it was given; None when it
        has no prices (a local model). The core reports the difference over each stage."""
        return None

    def requests_in_flight(self) -> int:
        """How many requests this teacher serves at once across overlapping calls; 0 (the
        default) when calls must not overlap.

        A teacher that returns n > 0 promises that `iter_generate` may run on several threads at
        once, all sharing its one limit of n requests in flight. The core then sends the next
        batches' requests while the current batch's last ones finish, so no slot idles at a
        batch boundary; the batches are still committed one by one, in order. An in-process
        engine that takes a whole batch at once (vLLM, transformers) keeps the default."""
        return 0

    def replica_options(self, index: int, count: int) -> Any:
        """The options of replica `index` of `count` that share this teacher's work (a stage with
        `executor: ray` runs one per Ray actor, each given a share of every batch).

        Limits that are totals for the teacher (requests in flight, rate limits, spend caps)
        must be divided so the replicas together keep them; engine settings stay as they are.
        The default copies the options."""
        return self.options.model_copy(deep=True)

    def generator(self, role: str = "generator") -> Generator:
        info = self.model_info()
        return Generator(
            role=role,
            plugin=self.name,
            plugin_version=self.plugin_version,
            model=info.model,
            revision=info.revision,
            file_hash=info.file_hash,
            license=info.license,
            sampling=self.sampling(),
        )


class SamplingOptions(Options):
    """Sampling options shared by teachers, so configs read the same whatever the engine."""

    n: int = Field(1, ge=1, description="Samples per request.")
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, description="Most new tokens per sample.")
    seed: int = Field(0, description="Base seed; the core derives one per request.")
