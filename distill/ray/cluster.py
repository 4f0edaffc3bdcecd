"""Joining a Ray cluster and reading its errors: shared by the filter executor and the teacher
and ranker replicas, and light to import (ray itself is imported by the function that needs it)."""

from __future__ import annotations

import logging
import re
from typing import Any


def connect(options: Any) -> int:
    """Join the configured cluster, or start a local one, once per process (a process already
    connected, by an earlier stage or by the caller, stays on its cluster); its CPU count."""
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if options is None or options.address is None:
            ray.init(num_cpus=getattr(options, "num_cpus", None), **kwargs)
        else:
            ray.init(address=options.address, **kwargs)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def remote_cause(exc: BaseException) -> str:
    """The last `SomeError: message` line of a Ray error's remote traceback (the cause), else its type."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if re.match(r"\s*[\w.]+(Error|Exception)\b.*:", line)]
    return lines[-1] if lines else type(exc).__name__
