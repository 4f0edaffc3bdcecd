"""Answer instructions (`response`) and grow new instructions from seeds (`self-instruct`)."""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from pydantic import Field

from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Candidate, Message, Record
from distill.task import ExpandTask, MapTask, PassThrough, Proposal, Reject
from distill.teacher import Sample, prefilled
from distill_plugins.tasks.multi_turn import note_turn


class ResponseTask(MapTask):
    """Ask the teacher to answer each record's prompt; n samples become candidates."""

    name = "response"

    class Options(Options):
        system_prompt: str | None = Field(None, description="Sent to the teacher; replaces the record's own.")
        keep_system_prompt: bool = Field(
            False,
            description="Keep the teacher's system prompt in the output. Off by default: the "
            "student should learn the behaviour without being told.",
        )
        min_chars: int = Field(1, ge=0, description="Shorter answers count as empty.")
        prefix: str | None = Field(
            None,
            description="Start every answer with this text: the teacher continues "
            "it (assistant prefill; local engines and vLLM servers support it). A small "
            "teacher that ignores a format rule in the system prompt follows it this way.",
        )
        answered: Literal["regenerate", "keep"] = Field(
            "regenerate",
            description="What to do with records that already end in an answer (seeds with "
            "responses): ask the teacher again, or keep their answer unchanged.",
        )

    def build(self, record: Record) -> list[Message] | Reject | PassThrough:
        prompt = record.prompt()
        if not any(m.role == "user" and m.content.strip() for m in prompt):
            return Reject("no user message to answer")
        if self.options.answered == "keep" and record.response():
            return PassThrough("already answered (answered: keep)")
        if self.options.system_prompt:
            prompt = [Message(role="system", content=self.options.system_prompt)] + [
                m for m in prompt if m.role != "system"
            ]
        if self.options.prefix:
            prompt = prompt + [Message(role="assistant", content=self.options.prefix)]
        return prompt

    def apply(self, record: Record, samples: list[Sample], generator: int) -> Record | Reject:
        texts = [prefilled(self.options.prefix, s.text) for s in samples]
        usable = [i for i, s in enumerate(samples) if len(s.text.strip()) >= max(1, self.options.min_chars)]
        if not usable:
            return Reject("empty response")
        prompt = record.prompt()
        if self.options.system_prompt:
            others = [m for m in prompt if m.role != "system"]
            prompt = (
                [Message(role="system", content=self.options.system_prompt)] + others
                if self.options.keep_system_prompt
                else others
            )
        first = usable[0]
        record.messages = prompt + [Message(role="assistant", content=texts[first])]
        if len(samples) > 1:
            record.candidates = [
                Candidate(content=texts[i], generator=generator, finish_reason=samples[i].finish_reason) for i in usable
            ]
        record.metadata["finish_reason"] = samples[first].finish_reason
        if "turns" in record.metadata:  # a multi-turn conversation: say who wrote this answer
            note_turn(record, "assistant", generator)
        return record


DEFAULT_PROMPT = (
    "Here are some example requests that users sent to an assistant:\n\n{examples}\n\n"
    "Write {count} new request{plural} of the same kind. Make {them} different from the examples. "
    "Reply with a numbered list and nothing else."
)

_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.*\S)\s*$")
_PREFIX = re.compile(r"^(?:new\s+)?(?:request|question|instruction|task)\s*\d*\s*[:.-]\s*", re.I)


def normalise(text: str) -> str:
    """An instruction as compared for sameness: case, punctuation and spacing aside."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class InstructionPoolTask(ExpandTask):
    """What the tasks that grow a pool of instructions share: `num_instructions` new ones, the
    seeds passed through when `keep_inputs` is set, and a new instruction the pool already holds
    (by `normalise`) rejected as a duplicate. Their options declare both fields."""

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.keep_inputs = self.options.keep_inputs

    def target(self) -> int:
        return self.options.num_instructions

    @staticmethod
    def instruction(record: Record) -> str:
        """The record's last user message, whitespace collapsed; empty when it has none."""
        users = [m.content for m in record.prompt() if m.role == "user"]
        return " ".join(users[-1].split()) if users else ""

    def accept(self, pool: list[Record], messages: list[Message]) -> Reject | None:
        text = normalise(messages[-1].content)
        if any(normalise(self.instruction(r)) == text for r in pool):
            return Reject("duplicate: same instruction already in the pool")
        return None


class SelfInstructTask(InstructionPoolTask):
    """Self-instruct (Wang et al., 2023): few-shot prompts sampled from the pool yield new instructions.

    New instructions join the pool, so later rounds see earlier machine-written examples too,
    as in the paper. Similarity filtering belongs to the filter stage.
    """

    name = "self-instruct"

    class Options(Options):
        num_instructions: int = Field(20, ge=1, description="New instructions to produce.")
        seed_examples: int = Field(3, ge=1, description="Seed examples per prompt.")
        generated_examples: int = Field(1, ge=0, description="Machine-written examples per prompt, once any exist.")
        per_prompt: int = Field(1, ge=1, le=20, description="New instructions asked for per prompt.")
        prompt: str = Field(DEFAULT_PROMPT, description="Template with {examples}, {count}, {plural}, {them}.")
        min_words: int = Field(3, ge=1)
        max_words: int = Field(120, ge=1)
        keep_inputs: bool = Field(True, description="Pass the seeds through to the output as well.")

    def propose(self, pool: list[Record], count: int, rng: random.Random) -> list[Proposal]:
        o = self.options
        seeds = [r for r in pool if "generated_by" not in r.metadata and self.instruction(r)]
        made = [r for r in pool if "generated_by" in r.metadata and self.instruction(r)]
        if not seeds and not made:
            return []
        n_prompts = max(1, -(-count // o.per_prompt))
        proposals = []
        for _ in range(n_prompts):
            picked = rng.sample(seeds, min(o.seed_examples, len(seeds)))
            picked += rng.sample(made, min(o.generated_examples, len(made)))
            rng.shuffle(picked)
            examples = "\n".join(f"{i}. {self.instruction(r)}" for i, r in enumerate(picked, 1))
            text = o.prompt.format(
                examples=examples,
                count=o.per_prompt,
                plural="" if o.per_prompt == 1 else "s",
                them="it" if o.per_prompt == 1 else "them",
            )
            proposals.append(Proposal(messages=[Message(role="user", content=text)], parents=picked))
        return proposals

    def parse(self, proposal: Proposal, sample: Sample) -> list[list[Message]] | Reject:
        o = self.options
        lines = [ln.strip() for ln in sample.text.splitlines() if ln.strip()]
        if not lines:
            return Reject("empty output")
        numbered = [m.group(1) for m in map(_NUMBERED.match, lines) if m]
        # Without a list, the first line that is not a preamble ("Here are some requests:").
        items = numbered or [ln for ln in lines if not ln.endswith(":")][:1]
        if not items:
            return Reject("no instruction found: only preamble lines")
        examples = {normalise(self.instruction(p)) for p in proposal.parents}
        out, reasons = [], []
        for item in items[: o.per_prompt]:
            text = _PREFIX.sub("", item).strip().strip('"').strip()
            words = len(text.split())
            if words < o.min_words:
                reasons.append(f"too short: {words} words < {o.min_words}")
            elif words > o.max_words:
                reasons.append(f"too long: {words} words > {o.max_words}")
            elif normalise(text) in examples:
                reasons.append("copied a few-shot example")
            else:
                out.append([Message(role="user", content=text)])
        return out if out else Reject(reasons[0])


@hookimpl
def register_tasks(register) -> None:
    register(ResponseTask)
    register(SelfInstructTask)
