"""Multi-turn conversations: a teacher plays the user and writes the next user message.

A conversation of N turns is N `response` stages (the assistant teacher) with a `user-turn`
stage (the user-simulating teacher) between each two: every turn is a committed stage, so a
killed run resumes mid-conversation, and each stage's teacher is in the record's provenance.
`metadata.turns` lists, per message written here or by a `response` stage after a user turn,
its index in `messages`, its role and the index of its writer in `provenance.generators`.

The teacher sees the conversation with the roles swapped and a persona as its system prompt,
so any chat teacher (an API included) can play the user.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Message, Record
from distill.task import MapTask, PassThrough, Reject
from distill.teacher import Sample

PERSONA = (
    "You are a person talking to an AI assistant. Read the conversation so far and write your next "
    "message to the assistant: a follow-up question or request that builds on its last answer. "
    "Write only the message, in the first person, without quoting the assistant."
)
_SWAP = {"user": "assistant", "assistant": "user"}


class UserTurnTask(MapTask):
    """Writes the user's next message in a conversation that ends with an answer."""

    name = "user-turn"

    class Options(Options):
        persona: str = Field(PERSONA, description="The user-simulating teacher's system prompt.")
        min_words: int = Field(2, ge=1, description="Shorter messages are rejected.")
        max_words: int = Field(150, ge=1)
        max_turns: int | None = Field(
            None, ge=1, description="Conversations with this many user messages already pass through unchanged."
        )

    def build(self, record: Record) -> list[Message] | Reject | PassThrough:
        convo = [m for m in record.messages if m.role in _SWAP]
        if not convo or convo[-1].role != "assistant":
            return Reject("nothing to reply to: the conversation does not end with an answer")
        users = sum(m.role == "user" for m in convo)
        if self.options.max_turns is not None and users >= self.options.max_turns:
            return PassThrough(f"already {users} user turns (max_turns: {self.options.max_turns})")
        swapped = [Message(role=_SWAP[m.role], content=m.content) for m in convo]
        return [Message(role="system", content=self.options.persona), *swapped]

    def apply(self, record: Record, samples: list[Sample], generator: int) -> Record | Reject:
        text = samples[0].text.strip() if samples else ""
        words = len(text.split())
        if not text:
            return Reject("empty user message")
        if words < self.options.min_words:
            return Reject(f"user message too short: {words} words < {self.options.min_words}")
        if words > self.options.max_words:
            return Reject(f"user message too long: {words} words > {self.options.max_words}")
        record.messages = [*record.messages, Message(role="user", content=text)]
        record.candidates = []
        note_turn(record, "user", generator)
        return record


def note_turn(record: Record, role: str, generator: int) -> None:
    """Record who wrote the conversation's last message (an index into provenance.generators)."""
    turns: list[dict[str, Any]] = record.metadata.setdefault("turns", [])
    turns.append({"message": len(record.messages) - 1, "role": role, "generator": generator})


@hookimpl
def register_tasks(register) -> None:
    register(UserTurnTask)
