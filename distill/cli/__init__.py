"""The `distill` command: one module per command group."""

from distill.cli.app import (
    app,
    out,
    err,
    run,
    inspect,
    report,
    repair,
    plugins,
    schema,
    version,
    main,
)

__all__ = [
    "app",
    "out",
    "err",
    "run",
    "inspect",
    "report",
    "repair",
    "plugins",
    "schema",
    "version",
    "main",
]
