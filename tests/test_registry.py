"""The plugin manager: a fresh one per test, failures reported by plugin name."""

from __future__ import annotations

import sys
import textwrap

import pytest
from fake_plugins import EchoTeacher, FakePlugins

from distill.errors import PluginError
from distill.hookspecs import hookimpl
from distill.registry import make_registry


def test_first_party_plugins_register_through_entry_points():
    reg = make_registry()
    for kind, name in [
        ("task", "response"),
        ("task", "self-instruct"),
        ("filter", "length"),
        ("filter", "exact-dedup"),
    ]:
        spec = reg.get(kind, name)
        assert spec.package == "distill" and spec.version
        assert spec.cls.__module__.startswith("distill_plugins.")


def test_duplicate_names_are_an_error_naming_both():
    class Again:
        @hookimpl
        def register_teachers(self, register):
            register(type("EchoAgain", (EchoTeacher,), {"name": "echo"}))

    with pytest.raises(PluginError, match="two plugins register a teacher named 'echo': 'fake'.* and 'again'"):
        make_registry(entry_points=False, extra=[("fake", FakePlugins()), ("again", Again())])


def test_registering_something_that_is_not_a_plugin_names_the_plugin():
    class Bad:
        @hookimpl
        def register_filters(self, register):
            register(object)

    reg = make_registry(entry_points=False, extra=[("bad", Bad()), ("fake", FakePlugins())])
    assert [(f.plugin, "not a Filter subclass" in f.error) for f in reg.failures] == [("bad", True)]
    assert reg.get("teacher", "echo")  # the other plugins still load
    with pytest.raises(PluginError, match="plugin 'bad' .*registered .* not a Filter subclass"):
        make_registry(entry_points=False, extra=[("bad", Bad())], strict=True)


def test_a_misspelled_hook_is_an_error_not_silence():
    class Typo:
        @hookimpl
        def register_filter(self, register):  # missing "s"
            pass

    reg = make_registry(entry_points=False, extra=[("typo", Typo()), ("fake", FakePlugins())])
    assert [(f.plugin, "unknown hook 'register_filter'" in f.error) for f in reg.failures] == [("typo", True)]
    assert reg.get("teacher", "echo")
    with pytest.raises(PluginError, match="plugin 'typo' .*implements an unknown hook"):
        make_registry(entry_points=False, extra=[("typo", Typo())], strict=True)


def test_a_register_hook_that_raises_is_reported_and_others_load():
    class Raises:
        @hookimpl
        def register_teachers(self, register):
            raise RuntimeError("cannot find my engine")

    reg = make_registry(extra=[("raises", Raises())])
    assert reg.get("task", "response")
    assert [("cannot find my engine" in f.error) for f in reg.failures if f.plugin == "raises"] == [True]
    with pytest.raises(PluginError, match="plugin 'raises'"):
        make_registry(entry_points=False, extra=[("raises", Raises())], strict=True)


@pytest.fixture
def broken_dist(tmp_path, monkeypatch):
    """A real installed distribution whose entry point fails to import."""
    site = tmp_path / "site"
    (site / "brokenplug-0.1.dist-info").mkdir(parents=True)
    (site / "brokenplug-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.1\n"
    )
    (site / "brokenplug-0.1.dist-info" / "entry_points.txt").write_text("[distill]\nbroken = brokenplug_mod\n")
    (site / "brokenplug_mod.py").write_text(
        textwrap.dedent("""
        import a_module_that_does_not_exist
    """)
    )
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("brokenplug_mod", None)


def test_a_plugin_that_fails_to_import_is_reported_and_others_still_load(broken_dist):
    reg = make_registry()
    assert reg.get("filter", "length")
    (failure,) = [f for f in reg.failures if f.plugin == "broken"]
    assert failure.package == "brokenplug" and "a_module_that_does_not_exist" in failure.error
    with pytest.raises(PluginError, match="plugin 'broken' \\(brokenplug\\): import failed"):
        make_registry(strict=True)
    with pytest.raises(PluginError, match="(?s)unknown teacher plugin 'nope'.*plugin 'broken' failed to load"):
        reg.get("teacher", "nope")


def test_env_var_restricts_which_plugins_load(monkeypatch, broken_dist):
    monkeypatch.setenv("DISTILL_PLUGINS", "dedup,quality")
    reg = make_registry()
    assert {"length", "exact-dedup"} <= set(reg.specs["filter"])
    assert not {"pii", "language"} & set(reg.specs["filter"])  # other first-party entry points stay out
    assert reg.specs["task"] == {} and reg.failures == []
    monkeypatch.setenv("DISTILL_PLUGINS", "")
    assert make_registry().all() == []


def test_each_registry_is_fresh():
    a = make_registry(entry_points=False, extra=[("fake", FakePlugins())])
    b = make_registry(entry_points=False)
    assert "echo" in a.specs["teacher"] and "echo" not in b.specs["teacher"]
