"""Precision and gradient checkpointing chosen from the machine, never from library defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path

from distill.models.folders import weight_files
from distill.trainer import Hardware

_BYTES_FULL = 16  # fp32 weights + gradients + two Adam moments, per parameter
_BYTES_ADAPTER = 4  # frozen fp32 weights; the adapter's own state is negligible


def plan_hardware(
    precision: str = "auto",
    gradient_checkpointing: bool | str = "auto",
    *,
    params: int | None = None,
    adapter: bool = False,
) -> Hardware:
    """Precision and gradient checkpointing for this machine, with the reasons."""
    import torch

    reasons: list[str] = []
    memory: int | None
    if torch.cuda.is_available():
        device, description = "cuda", torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory
        bf16 = torch.cuda.is_bf16_supported()
        auto = "bf16" if bf16 else "fp16"
        why = "CUDA GPU with bf16 support" if bf16 else "CUDA GPU without bf16: fp16 with loss scaling"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device, description, memory, auto = "mps", "Apple GPU (MPS)", _system_memory(), "fp32"
        why = "MPS: fp32 (mixed precision is not reliably faster there)"
    else:
        native = _cpu_bf16()
        device, memory = "cpu", _system_memory()
        description = f"CPU, {os.cpu_count()} cores" + (f", {'/'.join(native)}" if native else ", no bf16 instructions")
        if native:
            auto = "bf16"
            why = (
                f"the CPU computes in bf16 natively ({'/'.join(native)}); a LoRA SFT step of SmolLM2-135M "
                "measured ~2x faster in bf16 than in fp32 on such a CPU"
            )
        else:
            auto = "fp32"
            why = (
                "the CPU has no bf16 instructions (avx512_bf16, amx_bf16): bf16 would be emulated, and a LoRA "
                "SFT step measured 7-19x slower in bf16 than in fp32 on such CPUs"
            )
    if precision == "auto":
        chosen = auto
        reasons.append(f"precision {chosen}: {why}")
    else:
        chosen = precision
        reasons.append(f"precision {chosen}: set in the options")
    if gradient_checkpointing == "auto":
        need = params * (_BYTES_ADAPTER if adapter else _BYTES_FULL) if params else None
        gc = bool(need and memory and need > 0.5 * memory)
        if need and memory:
            gib = f"~{need / 2**30:.2f} GiB of {memory / 2**30:.0f} GiB"
            reasons.append(
                f"gradient checkpointing {'on' if gc else 'off'}: weights and optimizer state need "
                f"{gib}"
                + (", so activations are recomputed to fit" if gc else "; recomputing activations would only cost time")
            )
        else:
            reasons.append("gradient checkpointing off: model size unknown")
    else:
        gc = bool(gradient_checkpointing)
        reasons.append(f"gradient checkpointing {'on' if gc else 'off'}: set in the options")
    processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return Hardware(
        device=device,
        description=description,
        precision=chosen,
        gradient_checkpointing=gc,
        reasons=tuple(reasons),
        processes=processes,
    )


def _cpu_bf16() -> list[str]:
    """The CPU's native bf16 instruction sets that torch may use (none when its ISA is capped)."""
    capped = os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2") or os.environ.get(
        "ONEDNN_MAX_CPU_ISA", ""
    ).upper().startswith(("SSE", "AVX2", "AVX_"))
    return [] if capped else [f for f in ("amx_bf16", "avx512_bf16") if f in _cpu_flags()]


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def _system_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_params(folder: Path) -> int | None:
    """Parameter count from the weight files' size and the config's dtype (no loading)."""

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    size = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, 4)
    files = [w for w in weight_files(folder) if w.suffix == ".safetensors"]
    return sum(w.stat().st_size for w in files) // size if files else None
