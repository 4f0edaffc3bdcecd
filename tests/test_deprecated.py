"""Old import paths keep working for one release, as the same objects, with a warning."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from distill.deprecated import MOVED_MODULES, MOVED_NAMES


def test_every_old_module_path_imports_the_new_module_with_a_warning() -> None:
    # A fresh interpreter: in this one the old names may already be cached by other tests.
    code = """
import importlib, json, sys, warnings
from distill.deprecated import MOVED_MODULES
problems = []
for old, new in sorted(MOVED_MODULES.items()):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    target = importlib.import_module(new)
    msgs = [str(w.message) for w in caught if w.category is DeprecationWarning]
    if module is not target:
        problems.append(f"{old}: a different module object")
    if target.__name__ != new or target.__spec__.name != new:
        problems.append(f"{old}: {new} lost its own name ({target.__name__}, {target.__spec__.name})")
    if not any(old in m and new in m for m in msgs):
        problems.append(f"{old}: no DeprecationWarning naming {new} ({msgs})")
print(json.dumps(problems))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert len(MOVED_MODULES) >= 30  # every module that moved in 0.2.0


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, names in sorted(MOVED_NAMES.items()) for n in names])
def test_a_name_that_left_a_public_module_still_resolves_from_it_with_a_warning(module: str, name: str) -> None:
    mod = importlib.import_module(module)
    target, _, new_name = MOVED_NAMES[module][name].partition(":")
    with pytest.warns(DeprecationWarning, match=f"{module}.{name} moved to {target}.{new_name or name}"):
        value = getattr(mod, name)
    assert value is getattr(importlib.import_module(target), new_name or name)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    import distill.trainer

    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        distill.trainer.no_such_thing  # noqa: B018


def test_every_new_path_exists() -> None:
    for new in MOVED_MODULES.values():
        importlib.import_module(new)
    for names in MOVED_NAMES.values():
        for name, new in names.items():
            target, _, new_name = new.partition(":")
            assert hasattr(importlib.import_module(target), new_name or name), (new, name)
