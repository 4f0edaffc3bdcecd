"""docs/hooks.md documents every hook in distill/hookspecs.py with its exact signature, and
no hook that does not exist; every `@hookimpl` example in the plugin docs implements a real
hook with argument names the hook offers.

The signatures are derived from the hookspec functions themselves, so renaming an argument
or adding a hook without documenting it fails here. The checks are plain functions, tested
below on altered copies of the page, so this test is known to be able to fail.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from distill import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"
HOOKS_PAGE = DOCS / "hooks.md"
SECTION = re.compile(r"^### `(\w+)`\s*$", re.M)
IMPL = re.compile(r"@hookimpl\s*\n\s*def (\w+)\(([^)]*)\)")


def hookspec_functions() -> dict[str, object]:
    """The functions distill declares as hooks (pluggy marks them with `distill_spec`)."""
    return {
        name: f
        for name, f in vars(hookspecs).items()
        if inspect.isfunction(f) and hasattr(f, f"{hookspecs.hookspec.project_name}_spec")
    }


def _annotation(a: object) -> str:
    # hookspecs.py uses `from __future__ import annotations`: annotations are the source text.
    return a if isinstance(a, str) else inspect.formatannotation(a)


def signature(name: str, func: object) -> str:
    """`name(arg: Type, ...) -> Return`, as written in hookspecs.py."""
    sig = inspect.signature(func)
    params = ", ".join(
        p.name if p.annotation is inspect.Parameter.empty else f"{p.name}: {_annotation(p.annotation)}"
        for p in sig.parameters.values()
    )
    ret = "" if sig.return_annotation is inspect.Signature.empty else f" -> {_annotation(sig.return_annotation)}"
    return f"{name}({params}){ret}"


def sections(page: str) -> dict[str, str]:
    """Each `### \\`hook\\`` heading's text, up to the next heading of any level <= 3."""
    found: dict[str, str] = {}
    heads = list(SECTION.finditer(page))
    for m in heads:
        rest = page[m.end() :]
        end = re.search(r"^#{1,3} ", rest, re.M)
        found[m.group(1)] = rest[: end.start()] if end else rest
    return found


def page_problems(page: str, specs: dict[str, object]) -> list[str]:
    problems = []
    documented = sections(page)
    for name, func in specs.items():
        if name not in documented:
            problems.append(f"{name}: not documented (no '### `{name}`' section)")
        elif f"def {signature(name, func)}" not in documented[name]:
            problems.append(f"{name}: the section does not show the signature `def {signature(name, func)}`")
    problems += [
        f"{name}: documented, but no such hook in distill/hookspecs.py" for name in documented if name not in specs
    ]
    return problems + example_problems(page, specs)


def example_problems(page: str, specs: dict[str, object]) -> list[str]:
    """`@hookimpl def name(args)` examples must name a hook and only arguments it offers."""
    problems = []
    for m in IMPL.finditer(page):
        name = m.group(1)
        args = [a.split(":")[0].split("=")[0].strip() for a in m.group(2).split(",") if a.strip()]
        args = [a for a in args if a != "self"]
        if name not in specs:
            problems.append(f"example implements {name!r}, which is no hook")
            continue
        unknown = set(args) - set(inspect.signature(specs[name]).parameters)
        if unknown:
            problems.append(f"example {name}: arguments {sorted(unknown)} are not offered by the hook")
    return problems


def test_every_hook_is_documented_with_its_exact_signature_and_no_other():
    specs = hookspec_functions()
    assert len(specs) >= 10, "hookspecs.py lost its hooks, or the marker check is wrong"
    assert page_problems(HOOKS_PAGE.read_text(encoding="utf-8"), specs) == []


def test_the_plugin_tutorial_implements_only_real_hooks():
    page = (DOCS / "plugins.md").read_text(encoding="utf-8")
    assert IMPL.search(page), "the tutorial shows no hook implementation"
    assert example_problems(page, hookspec_functions()) == []


def test_signatures_are_read_from_the_hookspecs():
    specs = hookspec_functions()
    assert signature("register_filters", specs["register_filters"]) == "register_filters(register: Register) -> None"
    assert (
        signature("stage_finished", specs["stage_finished"])
        == "stage_finished(stage: str, stats: dict[str, Any]) -> None"
    )


# -- the checks catch what they are for ---------------------------------------------------------


@pytest.fixture
def page() -> str:
    return HOOKS_PAGE.read_text(encoding="utf-8")


def _without_section(page: str, name: str) -> str:
    start = page.index(f"### `{name}`")
    end = page.index("\n#", start + 1)
    return page[:start] + page[end + 1 :]


def test_a_missing_hook_is_caught(page):
    problems = page_problems(_without_section(page, "records_dropped"), hookspec_functions())
    assert problems == ["records_dropped: not documented (no '### `records_dropped`' section)"]


def test_a_hook_that_does_not_exist_is_caught(page):
    extra = "\n### `register_exporters`\n\n```python\ndef register_exporters(register: Register) -> None: ...\n```\n"
    problems = page_problems(page + extra, hookspec_functions())
    assert problems == ["register_exporters: documented, but no such hook in distill/hookspecs.py"]


def test_a_stale_signature_is_caught(page):
    stale = page.replace(
        "def stage_finished(stage: str, stats: dict[str, Any]) -> None",
        "def stage_finished(stage: str, totals: dict[str, int]) -> None",
    )
    assert stale != page
    assert [p.split(":")[0] for p in page_problems(stale, hookspec_functions())] == ["stage_finished"]


def test_a_hook_added_to_hookspecs_but_not_the_page_is_caught(page):
    def records_exported(stage: str, path: str) -> None:
        """A hook that does not exist yet."""

    specs = {**hookspec_functions(), "records_exported": records_exported}
    assert page_problems(page, specs) == ["records_exported: not documented (no '### `records_exported`' section)"]


def test_an_example_with_a_wrong_hook_or_argument_is_caught():
    specs = hookspec_functions()
    bad = "@hookimpl\ndef register_filter(register):\n    pass\n\n@hookimpl\ndef stage_finished(stage, totals):\n    pass\n"
    assert example_problems(bad, specs) == [
        "example implements 'register_filter', which is no hook",
        "example stage_finished: arguments ['totals'] are not offered by the hook",
    ]
