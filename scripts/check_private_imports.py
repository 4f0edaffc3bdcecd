"""Fails when a private name (`_x`) is imported across modules, in distill/ or plugins/.

A private name is the module's own business; another module that needs it is a sign that the
name should be public, or that the code using it belongs in that module. A private *module*
(`distill_plugins.filters._sketch`) may be imported inside its own package.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOTS = {"distill": "distill", "plugins": "distill_plugins"}


def module_name(path: Path, folder: str) -> str:
    parts = [ROOTS[folder], *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations(root: Path) -> list[str]:
    found = []
    for folder in ROOTS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root)
            here = module_name(rel, folder)
            for node in ast.walk(ast.parse(path.read_text(), str(rel))):
                if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                    continue
                if node.module.split(".")[0] not in ROOTS.values():
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{rel}:{node.lineno}: imports private {alias.name} from {node.module}")
                private_module = [p for p in node.module.split(".") if p.startswith("_") and not p.startswith("__")]
                package = node.module.rsplit(".", 1)[0]
                if private_module and not (here == package or here.startswith(package + ".")):
                    found.append(f"{rel}:{node.lineno}: imports from private module {node.module} outside its package")
    return found


if __name__ == "__main__":
    problems = violations(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(problems) or "no private names cross a module boundary")
    sys.exit(1 if problems else 0)
