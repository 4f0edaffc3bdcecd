"""Environment variables set for a while, then put back as they were.

Libraries read settings from the environment (progress bars, TensorBoard's folder, vLLM's KV
cache size), and the processes they start copy it. A setting meant for one step must not
outlive it: the caller's environment, and every later step's, stays as it was. Only the keys
set here are put back, so what others set meanwhile is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
