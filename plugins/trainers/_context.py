"""Context distillation at the logit level ("Learning by Distilling Context", Snell et al. 2022).

The teacher reads each prompt *with* a context (a system prompt, and optionally the start of its
answer); the student reads it without. On policy: the student samples a completion, the teacher
scores the student's tokens under its own context, and the student learns the teacher's token
distributions (generalised JSD, as the `distillation` trainer). The context's effect ends up in
the weights, so the trained model behaves as if prompted without paying for the prompt.

Alignment: TRL left-pads prompts and right-pads completions, so in both the student's input
(prompt + completion) and the teacher's (context + prompt + completion) the completion is the
last `K` positions; the last `K` hidden states before the final one predict the same tokens.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from distill.trainer import TrainJob, import_trl
from distill_plugins.trainers._online import DistillationTrainer


def with_context(prompt: Any, system_prompt: str) -> Any:
    """The teacher's prompt: the system prompt first (joined to one the prompt already has, so
    the teacher sees both), for a conversation or a plain text prompt."""
    if isinstance(prompt, str):
        return f"{system_prompt}\n\n{prompt}"
    messages = [dict(m) for m in prompt]
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = f"{system_prompt}\n\n{messages[0]['content']}"
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def teacher_prompt_ids(tok: Any, prompts: list[Any], system_prompt: str, prefix: str | None) -> list[list[int]]:
    """Token ids of each prompt as the teacher reads it: context, prompt, generation prompt, prefix.
    Tokenised like TRL tokenises the student's prompts (chat template for conversations)."""
    out = []
    for prompt in prompts:
        full = with_context(prompt, system_prompt)
        if isinstance(full, str):
            ids = list(tok(text=full + (prefix or ""))["input_ids"])
        else:
            text = tok.apply_chat_template(full, tokenize=False, add_generation_prompt=True) + (prefix or "")
            ids = list(tok(text=text, add_special_tokens=False)["input_ids"])
        out.append(ids)
    return out


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """(ids, mask) tensors, left-padded as TRL pads prompts, so the completions that follow align."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


@functools.cache
def context_trainer_class() -> type:
    """TRL's DistillationTrainer whose teacher reads (context + prompt + completion).

    Built on first use so importing the plugin stays light. It hooks in at three points of TRL
    1.16: after generation (add the teacher's prompt ids to the batch: they are split and
    shuffled with it for gradient accumulation), around the loss (hold this micro-batch's
    teacher prompt), and at the backbone call (swap the prompt when the model is the teacher).
    Everything else (chunked divergence, logit scales, temperature, beta) is TRL's own."""
    import torch

    base = import_trl("DistillationTrainer")

    class ContextDistillation(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, system_prompt: str, prefix: str | None = None, **kwargs: Any) -> None:
            self.system_prompt = system_prompt
            self.prefix = prefix
            self.teacher_context: tuple[Any, Any] | None = None
            super().__init__(*args, **kwargs)

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            tok = self.processing_class
            rows = teacher_prompt_ids(tok, [x["prompt"] for x in inputs], self.system_prompt, self.prefix)
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            ids, mask = left_pad(rows, pad)
            device = out["prompt_ids"].device
            out["teacher_prompt_ids"], out["teacher_prompt_mask"] = ids.to(device), mask.to(device)
            return out

        def _compute_loss(self, unwrapped_student: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> Any:
            self.teacher_context = (inputs["teacher_prompt_ids"], inputs["teacher_prompt_mask"])
            try:
                return super()._compute_loss(unwrapped_student, inputs, num_items_in_batch)
            finally:
                self.teacher_context = None

        def _get_last_hidden_state(
            self, unwrapped_model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, **kwargs: Any
        ) -> Any:
            ctx = self.teacher_context
            if ctx is not None and unwrapped_model is self.accelerator.unwrap_model(self.teacher_model):
                completion_ids = input_ids[:, -logits_to_keep:]
                completion_mask = attention_mask[:, -logits_to_keep:]
                input_ids = torch.cat([ctx[0].to(input_ids.device), completion_ids], dim=1)
                attention_mask = torch.cat([ctx[1].to(attention_mask.device), completion_mask], dim=1)
            return super()._get_last_hidden_state(unwrapped_model, input_ids, attention_mask, logits_to_keep, **kwargs)

    return ContextDistillation


class ContextDistillationTrainer(DistillationTrainer):
    """Context distillation: the teacher (by default the student's own starting model) answers
    with a system prompt and an optional answer prefix; the student, without them, learns the
    teacher's token distributions over its own sampled answers."""

    name = "context-distillation"

    class Options(DistillationTrainer.Options):
        teacher: str | None = Field(  # type: ignore[assignment]
            None,
            description="The teacher's model folder, 'embedded', or an earlier step's name; "
            "default: the model this step starts from (the same model, with the context).",
        )
        system_prompt: str = Field(description="The context the teacher reads and the student does not.")
        prefix: str | None = Field(
            None, description="Text the teacher's answer starts with, after the chat template's generation prompt."
        )

        @field_validator("system_prompt")
        @classmethod
        def _non_empty(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("system_prompt is empty: context distillation needs a context for the teacher")
            return value

        @field_validator("prefix")
        @classmethod
        def _prefix(cls, value: str | None) -> str | None:
            if value is not None and not value:
                raise ValueError("prefix is empty: leave it out, or give the text the teacher's answer starts with")
            return value

    def teacher_path(self, job: TrainJob) -> Path:
        if self.options.teacher is None:
            return job.student
        return super().teacher_path(job)

    def trl_trainer(self, **kwargs: Any) -> Any:
        return context_trainer_class()(system_prompt=self.options.system_prompt, prefix=self.options.prefix, **kwargs)

    def influences(self, teacher: Path) -> list[tuple[str, str]]:
        """The context by length and digest: the full text is in the lineage's options, and an
        influence's id must stay short (the lineage first asks whether it names a folder)."""
        o = self.options
        text = o.system_prompt + ("" if o.prefix is None else "\0" + o.prefix)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        context = f"system prompt of {len(o.system_prompt)} chars"
        if o.prefix is not None:
            context += f" and prefix of {len(o.prefix)} chars"
        return [*super().influences(teacher), ("teacher-context", f"{context}, sha256 {digest}")]
