"""Magpie (Xu et al., 2024): instructions sampled from an aligned chat model by giving it only
the chat template up to the user's turn, so it writes the user's message itself.

No seeds are needed: what the model writes is what its alignment data taught it users ask.
A `system_prompt` steers the domain ("You are the help desk of a Wi-Fi router"), as the paper
does for its task-specific sets. The teacher must render the chat template itself (a local
model: `transformers` or `vllm`); an API cannot be asked to write a user's turn. Answers come
from a `response` stage after this one, like any other instruction's.
"""

from __future__ import annotations

import random

from pydantic import Field

from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Message, Record
from distill.task import Proposal, Reject
from distill.teacher import Sample
from distill_plugins.tasks.basic import InstructionPoolTask


class MagpieTask(InstructionPoolTask):
    """New user instructions written by the model from an empty user turn."""

    name = "magpie"

    class Options(Options):
        num_instructions: int = Field(20, ge=1, description="Instructions to produce.")
        system_prompt: str | None = Field(
            None, description="Sent before the empty user turn to steer what users ask about (not kept)."
        )
        min_words: int = Field(3, ge=1, description="Shorter outputs are not an instruction.")
        max_words: int = Field(200, ge=1)
        keep_inputs: bool = Field(False, description="Pass the run's seeds (if any) through to the output as well.")

    def propose(self, pool: list[Record], count: int, rng: random.Random) -> list[Proposal]:
        # Every proposal is the same conversation; the core gives each its own sampling seed.
        system = [Message(role="system", content=self.options.system_prompt)] if self.options.system_prompt else []
        return [
            Proposal(messages=[*system, Message(role="user", content="")], continue_final=True) for _ in range(count)
        ]

    def parse(self, proposal: Proposal, sample: Sample) -> list[list[Message]] | Reject:
        text = sample.text.strip()
        words = len(text.split())
        if not text:
            return Reject("empty output")
        if words < self.options.min_words:
            return Reject(f"too short: {words} words < {self.options.min_words}")
        if words > self.options.max_words:
            return Reject(f"too long: {words} words > {self.options.max_words}")
        if sample.finish_reason == "length":
            return Reject("cut off: the model did not end the user's turn within max_tokens")
        return [[Message(role="user", content=text)]]


@hookimpl
def register_tasks(register) -> None:
    register(MagpieTask)
