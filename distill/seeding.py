"""Seeds derived from their parts, stable across processes, runs and resumes (unlike `hash`).

Two derivations exist and both are pinned: request seeds are stored in request-cache keys and
decide which answers a resumed run finds, sample seeds are what teachers pass to their engines.
Changing either value would make every cached answer unreachable, so they differ as they did
in 0.1.0 and `tests/test_compat_v0_1_0.py` holds them to it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _digest(parts: tuple[Any, ...]) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def request_seed(*parts: Any) -> int:
    """The 31-bit seed of a teacher request, from the run seed and the request's position."""
    return int(_digest(parts)[:8], 16) & 0x7FFFFFFF


def derive_seed(*parts: Any, bits: int = 63) -> int:
    """A non-negative seed for an engine. Servers that take a 32-bit signed seed want `bits=31`."""
    return int(_digest(parts)[:16], 16) & ((1 << bits) - 1)
