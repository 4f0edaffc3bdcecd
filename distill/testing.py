"""Helpers for distill's tests and for plugin authors testing against real models.

Everything here builds real artefacts (no mocks): a tiny but genuine Llama checkpoint with
SmolLM2's real tokenizer and chat template, small enough that a test generates from it in
well under a second, yet loaded and sampled exactly like a full-size model.

Heavy libraries are imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

from pathlib import Path

from distill.licenses import effective_tag
from distill.models.embedded import ensure_converted, write_marker
from distill.records import Candidate, Message, Record, Source, stable_id

TINY_MODEL_ID = "distill-tiny-llama"
TINY_MODEL_LICENSE = "Apache-2.0"


def tiny_model(path: Path, *, seed: int = 0, cache_dir: Path | None = None, head: str = "causal-lm") -> Path:
    """Write a tiny random Llama (6.6 M params, ~26 MB) into `path` and return `path`.

    The tokenizer and chat template are SmolLM2's, taken from the converted embedded model
    (converting it first if needed), so prompts are formatted as in production. Weights are
    random but reproducible: the same `seed` gives the same file on the same torch version.
    A `distill-model.json` declares its id and license, as a user's own folder would.
    `head="reward"` gives a one-logit sequence-classification model, as a reward model is.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
    )

    source = ensure_converted(cache_dir, progress=False)
    tok = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(tok),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    if head not in ("causal-lm", "reward"):
        raise ValueError(f"head must be 'causal-lm' or 'reward', not {head!r}")
    reward = head == "reward"
    config.architectures = ["LlamaForSequenceClassification" if reward else "LlamaForCausalLM"]
    config.num_labels = 1
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = (LlamaForSequenceClassification if reward else LlamaForCausalLM)(config).float().eval()
    finally:
        torch.random.set_rng_state(state)  # do not disturb the caller's random stream
    if not reward:
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
        )
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
        tok.save_pretrained(path)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    write_marker(
        path,
        model=TINY_MODEL_ID + ("-reward" if reward else ""),
        license=TINY_MODEL_LICENSE,
        description="random weights for tests; SmolLM2 tokenizer and chat template",
    )
    return path


def make_record(
    prompt: str,
    response: str | None = None,
    *,
    id: str | None = None,
    dataset: str = "test-seeds",
    license: str = "CC0-1.0",
    row: int = 0,
    candidates: list[tuple[str, float | None]] | None = None,
):
    """A record as the seeds stage would make it, for testing filters and tasks by hand.

    Its provenance is complete (source, a `loaded` event, an effective license tag), so a
    plugin under test sees what it would see in a real run.
    """

    messages = [Message(role="user", content=prompt)]
    if response is not None:
        messages.append(Message(role="assistant", content=response))
    record = Record(
        id=id or stable_id("test", dataset, row, prompt, response),
        messages=messages,
        candidates=[Candidate(content=c, score=s) for c, s in candidates or []],
    )
    record.provenance.sources.append(Source(dataset=dataset, row=row, license=license))
    record.add_event("seeds", "loaded")
    record.provenance.license = effective_tag(record)
    return record


def run_filter(filter_plugin, records: list) -> list:
    """Apply a filter plugin to records the way a filter stage does; returns its decisions."""
    decisions = filter_plugin.filter_batch(records)
    if len(decisions) != len(records):
        raise AssertionError(f"{filter_plugin.name} returned {len(decisions)} decisions for {len(records)} records")
    return decisions
