"""The request cache: every teacher call is made once and never paid for twice."""

from distill.cache.store import (
    BUSY_TIMEOUT_MS,
    FORMAT,
    IDENTITY_FIELDS,
    MAX_MISSES,
    SCAN_LIMIT,
    CacheStats,
    RequestCache,
    cache_key,
    default_cache_path,
    key_parts,
)

__all__ = [
    "FORMAT",
    "MAX_MISSES",
    "SCAN_LIMIT",
    "BUSY_TIMEOUT_MS",
    "IDENTITY_FIELDS",
    "default_cache_path",
    "key_parts",
    "cache_key",
    "CacheStats",
    "RequestCache",
]
