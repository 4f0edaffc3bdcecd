"""The pipeline config: one YAML file, validated by pydantic, errors named by key path."""

from distill.config.loader import (
    CacheSettings,
    PluginSettings,
    Config,
    LoadedConfig,
    interpolate,
    digest_view,
    interpolated_values,
    redact,
    parse_config,
    load_config,
    MAX_DEPTH,
    MAX_VALUES,
    validate_plugin_options,
    dump_yaml,
)

__all__ = [
    "CacheSettings",
    "PluginSettings",
    "Config",
    "LoadedConfig",
    "interpolate",
    "digest_view",
    "interpolated_values",
    "redact",
    "parse_config",
    "load_config",
    "MAX_DEPTH",
    "MAX_VALUES",
    "validate_plugin_options",
    "dump_yaml",
]
