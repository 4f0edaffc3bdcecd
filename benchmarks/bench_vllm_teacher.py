"""What distill's vLLM teacher costs over calling `vllm.LLM.chat` directly.

    python benchmarks/bench_vllm_teacher.py --out benchmarks/results/vllm_teacher.json \
        [--model tiny|embedded] [--prompts 256] [--reps 5] [--max-tokens 64]

One process, one engine: the script sets up a `VLLMTeacher`, then takes the teacher's own
`vllm.LLM` object for the raw runs. Both paths therefore share the engine, its KV cache and
its warm state, and the comparison measures only what sits around the generation call:
distill's request -> SamplingParams translation, its `Sample` conversion and usage accounting,
against a raw caller building SamplingParams and calling `LLM.chat`. The raw runs use the very
seeds the teacher sends, so both paths generate the same tokens (the script checks the texts
match), and the two paths alternate, in swapped order each repetition, so drift in machine
load hits both alike. Reported: generated tokens/s per run, and the median of the per-
repetition ratios distill/raw (target >= 0.95).

vLLM starts its engine with `spawn`, hence the `__main__` guard.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOPICS = [
    "the water cycle",
    "binary search",
    "photosynthesis",
    "compound interest",
    "TCP handshakes",
    "the French revolution",
    "sourdough bread",
    "black holes",
    "vaccines",
    "climate models",
    "hash tables",
    "plate tectonics",
    "the stock market",
    "jazz harmony",
    "solar panels",
    "garbage collection",
]
ASKS = [
    "Explain {t} to a ten-year-old.",
    "Give three facts about {t}.",
    "What is a common misconception about {t}?",
    "Write a short paragraph on {t}.",
    "How would you teach {t} in five minutes?",
    "Summarise {t} in two sentences.",
    "What question about {t} do experts still argue over?",
    "List the key terms someone must know about {t}.",
    "Compare {t} with something from everyday life.",
    "Why does {t} matter?",
    "Describe {t} as a story.",
    "What would happen without {t}?",
    "Give an example that shows {t} at work.",
    "What are the limits of {t}?",
    "How was {t} discovered or invented?",
    "Write a quiz question about {t}.",
]


def prompts(count: int) -> list[str]:
    """Distinct prompts of varied length, the same on every run."""
    all_prompts = [a.format(t=t) for t in TOPICS for a in ASKS]
    return [
        all_prompts[i % len(all_prompts)] + (f" (variant {i // len(all_prompts)})" if i >= len(all_prompts) else "")
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", choices=["tiny", "embedded"], default="tiny")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    from distill.plugin import PluginContext
    from distill.records import Message
    from distill.teacher import ChatRequest
    from distill_plugins.teachers.vllm import VLLMTeacher

    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        if args.model == "tiny":
            from distill.testing import tiny_model

            model = str(tiny_model(Path(tmp) / "tiny"))
        else:
            model = "embedded"
        requests = [
            ChatRequest(messages=[Message(role="user", content=p)], seed=1000 + i)
            for i, p in enumerate(prompts(args.prompts))
        ]
        teacher = VLLMTeacher(model=model, n=1, temperature=0.7, top_p=0.95, max_tokens=args.max_tokens)
        started = time.perf_counter()
        teacher.setup(PluginContext(base_dir=Path.cwd(), progress=False))
        startup_s = time.perf_counter() - started
        try:
            result = compare(teacher, requests, args.reps)
        finally:
            teacher.close()

    import vllm

    report = {
        "benchmark": "vllm_teacher: distill VLLMTeacher.generate vs raw vllm.LLM.chat, one shared engine",
        "model": args.model,
        "model_id": result.pop("model_id"),
        "prompts": args.prompts,
        "max_tokens": args.max_tokens,
        "temperature": 0.7,
        "top_p": 0.95,
        "repetitions": args.reps,
        "engine_startup_s": round(startup_s, 1),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "vllm": vllm.__version__,
        },
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "distill_tokens_per_s_median",
                    "raw_tokens_per_s_median",
                    "ratio_median",
                    "meets_target",
                    "identical_outputs",
                )
            },
            indent=2,
        )
    )


def compare(teacher: Any, requests: list[Any], reps: int) -> dict[str, Any]:
    llm = teacher._engine.llm  # the teacher's own engine: both paths share it (see the docstring)
    conversations = [[{"role": m.role, "content": m.content} for m in r.messages] for r in requests]
    # The seeds distill sends for these requests, so the raw path samples the same tokens.
    specs = [teacher._spec(r, c) for r, c in zip(requests, conversations)]

    def run_distill() -> tuple[int, float, list[str]]:
        t = time.perf_counter()
        out = teacher.generate(requests)
        elapsed = time.perf_counter() - t
        return sum(s.completion_tokens for samples in out for s in samples), elapsed, [s[0].text for s in out]

    def raw_params(chosen: list[dict[str, Any]]) -> list[Any]:
        from vllm import SamplingParams

        return [
            SamplingParams(
                n=s["n"], temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"], seed=s["seed"]
            )
            for s in chosen
        ]

    def run_raw() -> tuple[int, float, list[str]]:
        t = time.perf_counter()
        outputs = llm.chat(conversations, raw_params(specs), use_tqdm=False)
        elapsed = time.perf_counter() - t
        return sum(len(c.token_ids) for o in outputs for c in o.outputs), elapsed, [o.outputs[0].text for o in outputs]

    # Warm-up, untimed: first-call costs (tokenizer, chat template, allocator) hit neither path.
    warm = requests[:8]
    teacher.generate(warm)
    llm.chat(conversations[:8], raw_params(specs[:8]), use_tqdm=False)

    runs = []
    identical = True
    for rep in range(reps):
        order = [("distill", run_distill), ("raw", run_raw)]
        if rep % 2:
            order.reverse()
        measured = {}
        for name, fn in order:
            tokens, seconds, texts = fn()
            measured[name] = {
                "tokens": tokens,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(tokens / seconds, 1),
                "texts": texts,
            }
        identical &= measured["distill"]["texts"] == measured["raw"]["texts"]
        ratio = measured["distill"]["tokens_per_s"] / measured["raw"]["tokens_per_s"]
        runs.append(
            {
                "rep": rep,
                "order": [n for n, _ in order],
                "ratio": round(ratio, 4),
                **{k: {f: v for f, v in m.items() if f != "texts"} for k, m in measured.items()},
            }
        )
        print(
            f"rep {rep}: distill {measured['distill']['tokens_per_s']} tok/s, "
            f"raw {measured['raw']['tokens_per_s']} tok/s, ratio {ratio:.3f}",
            file=sys.stderr,
            flush=True,
        )
    ratio_median = statistics.median(r["ratio"] for r in runs)
    return {
        "model_id": teacher.model_info().model,
        "runs": runs,
        "distill_tokens_per_s_median": statistics.median(r["distill"]["tokens_per_s"] for r in runs),
        "raw_tokens_per_s_median": statistics.median(r["raw"]["tokens_per_s"] for r in runs),
        "ratio_median": round(ratio_median, 4),
        "target": 0.95,
        "meets_target": ratio_median >= 0.95,
        "identical_outputs": identical,
    }


if __name__ == "__main__":
    main()
