"""distill: synthetic data and teacher-student distillation with per-record provenance.

Importing this package stays light: no torch, vllm, transformers, trl, peft, openai, ray or
datasets. Plugins import those inside the functions that need them.
"""

from distill import deprecated
from distill.records import Candidate, Event, Generator, LicenseTag, Message, Provenance, Record, Source

__version__ = "0.2.0.dev0"

deprecated.install()

__all__ = ["Candidate", "Event", "Generator", "LicenseTag", "Message", "Provenance", "Record", "Source", "__version__"]
