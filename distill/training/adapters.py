"""Loading a student, a teacher or a reward model folder for training, LoRA adapters included.

The core needs these too: a chain that starts from an adapter trains on it merged into its base
(`merged_folder`), and so does an evaluation of an adapter.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from distill.errors import PluginError
from distill.layout import MODEL_MARKER


def load_model(
    path: Path, who: str, *, head: str = "causal-lm", role: str = "student", dtype: Any = None, quantization: Any = None
) -> Any:
    """A causal LM or a one-logit sequence classifier; an adapter folder is loaded on its base and
    merged. Any failure is a PluginError naming the trainer, the role and the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dtype = dtype or torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True}  # never unpickle a .bin
    if quantization is not None:  # bitsandbytes quantises while placing the weights on this process's GPU
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        if (path / "adapter_config.json").is_file():
            return _merged_adapter(path, head, kwargs)
        if head == "reward":
            return AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, **kwargs)
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except Exception as exc:
        raise PluginError(
            f"{who} trainer: cannot load the {role} model from {path}: {type(exc).__name__}: {exc}"
        ) from None


def _merged_adapter(path: Path, head: str, kwargs: dict[str, Any]) -> Any:
    """An adapter folder loaded on its base and merged; a causal-LM adapter under a reward head
    (a reward model started from an SFT adapter) goes through a merged copy on disk."""
    import tempfile

    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification

    task = json.loads((path / "adapter_config.json").read_text()).get("task_type")
    if task == "SEQ_CLS":
        return AutoPeftModelForSequenceClassification.from_pretrained(str(path), **kwargs).merge_and_unload()
    merged = AutoPeftModelForCausalLM.from_pretrained(str(path), **kwargs).merge_and_unload()
    if head != "reward":
        return merged
    with tempfile.TemporaryDirectory(prefix="distill-merge-") as tmp:
        merged.save_pretrained(tmp)
        return AutoModelForSequenceClassification.from_pretrained(tmp, num_labels=1, **kwargs)


def load_tokenizer(path: Path, who: str, role: str = "student") -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise PluginError(
            f"{who} trainer: cannot load the {role} tokenizer from {path}: {type(exc).__name__}: {exc}"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise PluginError(
            f"{who} trainer: the {role} tokenizer in {path} has no chat template; distill's datasets are conversations"
        )
    return tok


def merged_folder(adapter: Path, who: str) -> Path:
    """`adapter/merged`, written once: full weights of a causal-LM adapter merged into its base.

    A step that starts from an adapter must train on top of the merged weights, or the adapter
    it saves names the original base and loading it drops everything the earlier step learned."""
    out = adapter / "merged"
    if (out / "config.json").is_file():
        return out
    model = load_model(adapter, who, role="previous step's")
    tmp = adapter / f".merged-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    load_tokenizer(adapter, who, role="previous step's").save_pretrained(str(tmp))
    for name in (MODEL_MARKER,):  # the merged weights carry the same lineage and terms
        if (adapter / name).is_file():
            shutil.copyfile(adapter / name, tmp / name)
    tmp.replace(out)
    return out
