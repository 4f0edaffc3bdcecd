"""First-party evaluators: a task rubric (any reward function), judge win-rate of one contender
against another, and perplexity of the held-out reference answers."""

from __future__ import annotations

import inspect
import math
from statistics import fmean
from typing import Any

from pydantic import Field

from distill.errors import ConfigError, PluginError
from distill.evaluator import Contender, EvalContext, EvalItem, EvalScores, Evaluator
from distill.hookspecs import hookimpl
from distill.models.folders import library_bars_off
from distill.plugin import Options, PluginContext
from distill.records import Message
from distill.teacher import ChatRequest
from distill_plugins.rankers import PAIR_PROMPT, JudgeRanker, load_callable


def _mean(values: list[float | None]) -> float:
    got = [v for v in values if v is not None]
    return fmean(got) if got else float("nan")


class RubricEvaluator(Evaluator):
    """The task's own rubric: a reward function `f(prompt, response, **kwargs) -> float` (the
    same signature the reward-function ranker and GRPO use), averaged over the held-out set."""

    name = "rubric"
    description = "mean score of the task rubric (a reward function), 0 to 1 for a pass/fail rubric"

    class Options(Options):
        function: str = Field(
            description="'package.module:function' or 'path/to/file.py:function' (relative to the config) to call."
        )
        kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for it.")

    def setup(self, context: PluginContext) -> None:
        super().setup(context)
        self._fn = load_callable(self.options.function, context.base_dir)
        params = inspect.signature(self._fn).parameters.values()
        #: Rubrics that care what the question is about (on- or off-topic) take the item's tags.
        self._tags = any(p.name == "tags" or p.kind is p.VAR_KEYWORD for p in params)

    def evaluate(self, items: list[EvalItem], contenders: list[Contender], context: EvalContext) -> EvalScores:
        per_item: dict[str, list[float | None]] = {}
        for c in contenders:
            scores: list[float | None] = []
            for it, answer in zip(items, c.answers):
                prompt = [m.model_dump() for m in it.messages]
                extra = {"tags": it.tags} if self._tags else {}
                try:
                    scores.append(float(self._fn(prompt, answer, **extra, **self.options.kwargs)))
                except Exception as exc:
                    raise PluginError(
                        f"rubric function {self.options.function!r} failed on held-out item "
                        f"{it.id} ({c.name}): {type(exc).__name__}: {exc}"
                    ) from exc
            per_item[c.name] = scores
        return EvalScores(scores={k: _mean(v) for k, v in per_item.items()}, per_item=per_item)


class JudgeWinRateEvaluator(Evaluator):
    """How often a judge model prefers one contender's answer to another's, asked in both orders
    (judges favour a position; a win in one order and a loss in the other is a tie)."""

    name = "judge-win-rate"
    description = "share of held-out questions where the judge preferred the answer (ties count half)"

    class Options(Options):
        judge: str = Field(description="Key in `teachers` of the judge model.")
        candidate: str = Field("student", description="Contender whose win rate is reported.")
        baseline: str = Field("teacher", description="Contender it is compared with.")
        rubric: str = Field(
            "Which answer follows the assistant's instructions and answers the question "
            "better: correct, on-topic, concise."
        )
        structured: bool = Field(
            True, description="Ask for JSON with a schema (engines that cannot enforce it still get the instruction)."
        )

    def evaluate(self, items: list[EvalItem], contenders: list[Contender], context: EvalContext) -> EvalScores:
        o = self.options
        by_name = {c.name: c for c in contenders}
        for role in (o.candidate, o.baseline):
            if role not in by_name:
                raise ConfigError(f"judge-win-rate: no contender named {role!r} (contenders: {', '.join(by_name)})")
        cand, base = by_name[o.candidate], by_name[o.baseline]
        fmt = (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "verdict",
                    "schema": {
                        "type": "object",
                        "properties": {"winner": {"enum": ["A", "B", "tie"]}},
                        "required": ["winner"],
                        "additionalProperties": False,
                    },
                },
            }
            if o.structured
            else None
        )
        requests = []
        for k, it in enumerate(items):
            for a, b in ((cand, base), (base, cand)):
                text = PAIR_PROMPT.format(rubric=o.rubric, question=it.prompt, a=a.answers[k], b=b.answers[k])
                requests.append(
                    ChatRequest(messages=[Message(role="user", content=text)], n=1, seed=0, response_format=fmt)
                )
        answers = context.teacher(o.judge)(requests, f"judge-win-rate ({o.candidate} vs {o.baseline})")
        per_item: list[float | None] = []
        counts = {"wins": 0, "ties": 0, "losses": 0, "unparseable": 0}
        for k in range(len(items)):
            points = []
            for order, samples in enumerate(answers[2 * k : 2 * k + 2]):
                w = JudgeRanker._read_winner(samples[0].text if samples else "")
                if w is None:
                    counts["unparseable"] += 1
                    continue
                cand_slot = "A" if order == 0 else "B"
                points.append(0.5 if w == "tie" else 1.0 if w == cand_slot else 0.0)
            score = fmean(points) if points else None
            per_item.append(score)
            if score is not None:
                counts["wins" if score > 0.5 else "losses" if score < 0.5 else "ties"] += 1
        rate = _mean(per_item)
        return EvalScores(
            scores={cand.name: rate, base.name: 1.0 - rate if not math.isnan(rate) else rate},
            per_item={cand.name: per_item, base.name: [None if s is None else 1.0 - s for s in per_item]},
            details={"judge": o.judge, "candidate": cand.name, "baseline": base.name, **counts},
        )


class PerplexityEvaluator(Evaluator):
    """Perplexity of the held-out reference answers under each contender with local weights
    (completion tokens only, with the contender's own system prompt): how close a model's
    distribution is to the answers it should give, sampling aside."""

    name = "perplexity"
    higher_is_better = False
    description = "perplexity of the held-out reference answers (lower is better)"

    class Options(Options):
        batch_size: int = Field(8, ge=1)
        max_length: int = Field(1024, ge=16, description="Longer conversations are cut from the left.")
        contenders: list[str] | None = Field(None, description="Only these (default: all with local weights).")

    def evaluate(self, items: list[EvalItem], contenders: list[Contender], context: EvalContext) -> EvalScores:
        scored = [(k, it) for k, it in enumerate(items) if it.reference]
        if not scored:
            return EvalScores(scores={}, details={"skipped": "no held-out item has a reference answer"})
        wanted = [
            c
            for c in contenders
            if c.model_path is not None and (self.options.contenders is None or c.name in self.options.contenders)
        ]
        scores: dict[str, float] = {}
        per_item: dict[str, list[float | None]] = {}
        done: dict[tuple[str, str | None], tuple[list[float], list[int]]] = {}
        for c in wanted:
            # Same weights, same system prompt: the same reference likelihoods (a teacher and its
            # best-of-N are one model), computed once.
            key = (str(c.model_path), c.system_prompt)
            if key not in done:
                done[key] = self._score(c, [it for _, it in scored])
            nll, tokens = done[key]
            items_ppl: list[float | None] = [None] * len(items)
            for (k, _), (n, t) in zip(scored, zip(nll, tokens)):
                items_ppl[k] = math.exp(n / t) if t else None
            per_item[c.name] = items_ppl
            scores[c.name] = math.exp(sum(nll) / max(1, sum(tokens)))
        skipped = [c.name for c in contenders if c not in wanted]
        return EvalScores(
            scores=scores,
            per_item=per_item,
            details={"items": len(scored), **({"not scored": skipped} if skipped else {})},
        )

    def _score(self, c: Contender, items: list[EvalItem]) -> tuple[list[float], list[int]]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        assert c.model_path is not None
        with library_bars_off():
            tok = AutoTokenizer.from_pretrained(str(c.model_path))
            model = AutoModelForCausalLM.from_pretrained(str(c.model_path), dtype=torch.float32, use_safetensors=True)
        model.eval()
        rows = [self._tokens(tok, c, it) for it in items]
        nll: list[float] = []
        counts: list[int] = []
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        with torch.inference_mode():
            for start in range(0, len(rows), self.options.batch_size):
                batch = rows[start : start + self.options.batch_size]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, (seq, prompt_len) in enumerate(batch):
                    ids[r, : len(seq)] = torch.tensor(seq)
                    mask[r, : len(seq)] = 1
                    labels[r, prompt_len : len(seq)] = torch.tensor(seq[prompt_len:])
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                target = labels[:, 1:]
                loss = torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), target, ignore_index=-100, reduction="none"
                )
                nll.extend(loss.sum(dim=1).tolist())
                counts.extend((target != -100).sum(dim=1).tolist())
        del model
        return nll, counts

    def _tokens(self, tok: Any, c: Contender, it: EvalItem) -> tuple[list[int], int]:
        """The conversation's token ids and where the reference answer starts."""
        msgs = ([{"role": "system", "content": c.system_prompt}] if c.system_prompt else []) + [
            m.model_dump() for m in it.messages
        ]
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": it.reference}], tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False).input_ids
        f_ids = tok(full, add_special_tokens=False).input_ids
        if f_ids[: len(p_ids)] != p_ids:  # a template that renders the prompt differently once answered
            f_ids = (
                p_ids
                + tok(
                    full[len(prompt) :] if full.startswith(prompt) else it.reference or "", add_special_tokens=False
                ).input_ids
            )
        cut = max(0, len(f_ids) - self.options.max_length)
        return f_ids[cut:], max(1, len(p_ids) - cut)


@hookimpl
def register_evaluators(register) -> None:  # type: ignore[no-untyped-def]
    register(RubricEvaluator)
    register(JudgeWinRateEvaluator)
    register(PerplexityEvaluator)
