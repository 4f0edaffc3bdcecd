"""distill: synthetic data and teacher-student distillation with per-record provenance.

Importing this package stays light: no torch, vllm, transformers, trl, peft, openai, ray or
datasets. Plugins import those inside the functions that need them.
"""

from typing import TYPE_CHECKING, Any

from distill import deprecated
from distill.records import Candidate, Event, Generator, LicenseTag, Message, Provenance, Record, Source

if TYPE_CHECKING:
    from distill.api import Run, generate, run

__version__ = "0.2.0.dev0"

deprecated.install()

__all__ = [
    "Candidate",
    "Event",
    "Generator",
    "LicenseTag",
    "Message",
    "Provenance",
    "Record",
    "Run",
    "Source",
    "__version__",
    "generate",
    "run",
]

_API = ("run", "Run", "generate")


def __getattr__(name: str) -> Any:
    """`distill.run`, `distill.Run` and `distill.generate` load the engine on first use, not on `import distill`."""
    if name in _API:
        import distill.api

        return getattr(distill.api, name)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
