"""Evol-Instruct (Xu et al., 2023, "WizardLM"): rewrite instructions into harder ones (in depth)
and rarer ones (in breadth), generation after generation.

Each round takes the pool's least-evolved instructions that have not been evolved yet (the
seeds first, then generation 1, ...) and asks the teacher to rewrite each with one method
drawn at random. An evolution that fails the method's elimination rules is rejected with the
rule as its reason and its parent stays in line for another try, as in the paper. Every
evolved record carries `evol_generation`, `evol_method` and `evolved_from` (the parent's id) in
its metadata: the pool rebuilt after a resume knows what was already evolved.

Elimination rules 1 and 4 (no information gain, copied the rewriting prompt's words) apply
here; the paper asks ChatGPT whether two instructions are equal, this task compares their
words. Rules 2 and 3 judge the *answer* (a "sorry" under 80 words; only punctuation and stop
words): the `evol-elimination` filter applies them after the response stage.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import Field

from distill.filter import KEEP, Decision, Drop, Filter
from distill.hookspecs import hookimpl
from distill.plugin import Options
from distill.records import Message, Record
from distill.task import Proposal, Reject
from distill.teacher import Sample
from distill_plugins.tasks.basic import InstructionPoolTask, normalise

Method = Literal["constraints", "deepen", "concretize", "reasoning", "breadth"]

IN_DEPTH = (
    "I want you to act as a Prompt Rewriter. Your objective is to rewrite a given prompt into a "
    "more complex version, to make famous AI systems a bit harder to handle. The rewritten prompt "
    "must be reasonable and must be understood and answered by humans. You SHOULD complicate the "
    "given prompt using the following method:\n{method}\nTry your best not to make the rewritten "
    "prompt verbose: it can only add 10 to 20 words to the given prompt. Reply with the rewritten "
    "prompt only.\n\n#The Given Prompt#:\n{instruction}\n\n#Rewritten Prompt#:\n"
)
IN_BREADTH = (
    "I want you to act as a Prompt Creator. Your goal is to draw inspiration from the given prompt "
    "to create a brand new prompt. The new prompt should belong to the same domain as the given "
    "prompt but be even more rare. Its length and complexity should be similar to the given "
    "prompt's. It must be reasonable and must be understood and answered by humans. Reply with the "
    "created prompt only.\n\n#Given Prompt#:\n{instruction}\n\n#Created Prompt#:\n"
)
METHODS: dict[str, str] = {
    "constraints": "Add one more constraint or requirement to the given prompt.",
    "deepen": "If the given prompt asks about certain issues, increase the depth and breadth of the inquiry.",
    "concretize": "Replace general concepts with more specific concepts.",
    "reasoning": "If the given prompt can be solved with just a few simple thinking processes, rewrite it "
    "to explicitly request multiple-step reasoning.",
}
#: Rule 4: an evolution that repeats the rewriting prompt's own words failed.
_TEMPLATE_WORDS = re.compile(r"given prompt|rewritten prompt|created prompt|#", re.I)
_LEAD = re.compile(r"^\s*(?:#?\s*(?:rewritten|created|new)\s+prompt\s*#?\s*:?)\s*", re.I)
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class EvolInstructTask(InstructionPoolTask):
    """New, harder and rarer instructions, evolved from the pool's over `generations`."""

    name = "evol-instruct"

    class Options(Options):
        num_instructions: int = Field(20, ge=1, description="Evolved instructions to produce.")
        generations: int = Field(
            4, ge=1, le=16, description="How many times an instruction may be evolved in a line (the paper: 4)."
        )
        methods: list[Method] = Field(
            default_factory=lambda: ["constraints", "deepen", "concretize", "reasoning", "breadth"],
            min_length=1,
            description="Evolutions to draw from, uniformly: the four in-depth ones and `breadth`.",
        )
        min_new_words: int = Field(
            1, ge=1, description="Rule 1: an evolution with fewer words its parent lacks adds no information."
        )
        max_words: int = Field(300, ge=1, description="Longer outputs are not an instruction.")
        keep_inputs: bool = Field(True, description="Pass the seeds through to the output as well.")

    def propose(self, pool: list[Record], count: int, rng: random.Random) -> list[Proposal]:
        o = self.options
        evolved = {r.metadata.get("evolved_from") for r in pool}
        ready = [r for r in pool if r.id not in evolved and self.instruction(r) and _generation(r) < o.generations]
        rng.shuffle(ready)
        ready.sort(key=_generation)  # stable: the oldest generation first, random within it
        proposals = []
        for parent in ready[:count]:
            method = rng.choice(o.methods)
            instruction = self.instruction(parent)
            text = (
                IN_BREADTH.format(instruction=instruction)
                if method == "breadth"
                else IN_DEPTH.format(method=METHODS[method], instruction=instruction)
            )
            proposals.append(
                Proposal(
                    messages=[Message(role="user", content=text)],
                    parents=[parent],
                    metadata={
                        "evol_generation": _generation(parent) + 1,
                        "evol_method": method,
                        "evolved_from": parent.id,
                    },
                )
            )
        return proposals

    def parse(self, proposal: Proposal, sample: Sample) -> list[list[Message]] | Reject:
        text = _LEAD.sub("", sample.text.strip()).strip().strip('"').strip()
        if not text:
            return Reject("empty output")
        if _TEMPLATE_WORDS.search(text):
            return Reject("elimination rule 4: copied the rewriting prompt's words")
        if len(text.split()) > self.options.max_words:
            return Reject(f"too long: {len(text.split())} words > {self.options.max_words}")
        parent = set(_words(self.instruction(proposal.parents[0])))
        new = [w for w in set(_words(text)) if w not in parent]
        if proposal.metadata.get("evol_method") != "breadth" and len(new) < self.options.min_new_words:
            return Reject("elimination rule 1: no information gain over the instruction it evolved from")
        if normalise(text) == normalise(self.instruction(proposal.parents[0])):
            return Reject("elimination rule 1: the same instruction as its parent")
        return [[Message(role="user", content=text)]]


def _generation(record: Record) -> int:
    return int(record.metadata.get("evol_generation", 0))


STOP_WORDS = frozenset(
    "a an the and or but if then so of to in on at by for with from as is are was were be been "
    "it this that these those i you he she we they me him her us them my your our their".split()
)


class EvolElimination(Filter):
    """Evol-Instruct's answer-side elimination rules, after the response stage: rule 2 (the
    teacher could not answer: "sorry" in a short answer) and rule 3 (the answer is only
    punctuation and stop words). Applies to any generated data; the rules are the paper's."""

    name = "evol-elimination"

    class Options(Options):
        sorry_below_words: int = Field(80, ge=1, description="Rule 2: an answer with 'sorry' and fewer words fails.")

    def filter_batch(self, records: list[Record]) -> list[Decision]:
        out: list[Decision] = []
        for r in records:
            answer = r.response() or ""
            words = _words(answer)
            if "sorry" in words and len(answer.split()) < self.options.sorry_below_words:
                out.append(
                    Drop(f"elimination rule 2: the teacher could not answer ('sorry' in {len(answer.split())} words)")
                )
            elif not [w for w in words if w not in STOP_WORDS]:
                out.append(Drop("elimination rule 3: the answer is only punctuation and stop words"))
            else:
                out.append(KEEP)
        return out


@hookimpl
def register_tasks(register) -> None:
    register(EvolInstructTask)


@hookimpl
def register_filters(register) -> None:
    register(EvolElimination)
