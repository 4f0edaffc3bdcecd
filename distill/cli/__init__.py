"""The `distill` command: one module per command group."""

from distill.cli.app import (
    app,
    err,
    inspect,
    main,
    out,
    plugins,
    repair,
    report,
    run,
    schema,
    version,
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
