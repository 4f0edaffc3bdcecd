"""The language filter with the real py3langid detector (probabilities measured with it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

pytest.importorskip("py3langid", reason="the language filter needs the `language` extra (py3langid)")

from distill.errors import PluginError
from distill.filter import KEEP, Drop
from distill.plugin import PluginContext
from distill.registry import make_registry
from distill.testing import make_record, run_filter
from distill_plugins.filters.language import LanguageFilter

SENTENCES = {
    "en": "Please explain how a router assigns addresses to the devices in my home network.",
    "de": "Bitte erkläre, wie ein Router den Geräten in meinem Heimnetz Adressen zuweist.",
    "fr": "Explique-moi comment un routeur attribue des adresses aux appareils de mon réseau domestique.",
    "es": "Explica cómo un router asigna direcciones a los dispositivos de mi red doméstica.",
    "zh": "请解释路由器如何为我家庭网络中的设备分配地址。",
}


def prompts(*texts: str) -> list:
    return [make_record(t, id=f"r{i}") for i, t in enumerate(texts)]


def wrong(lang: str, p: str, allowed: str) -> Drop:
    return Drop(f"wrong language: detected '{lang}' ({p}), allowed {allowed}")


def test_registered_under_its_name():
    assert make_registry().get("filter", "language").cls is LanguageFilter


def test_only_the_allowed_language_is_kept():
    f = LanguageFilter(field="prompt", languages=["en"])
    assert run_filter(f, prompts(*SENTENCES.values())) == [
        KEEP,
        wrong("de", "1.00", "en"),
        wrong("fr", "1.00", "en"),
        wrong("es", "0.83", "en"),
        wrong("zh", "1.00", "en"),
    ]


def test_several_allowed_languages():
    f = LanguageFilter(field="prompt", languages=["DE", "zh", "en"])
    assert f.options.languages == ["de", "zh", "en"]
    assert run_filter(f, prompts(*SENTENCES.values())) == [
        KEEP,
        KEEP,
        wrong("fr", "1.00", "de, zh, en"),
        wrong("es", "0.83", "de, zh, en"),
        KEEP,
    ]


def test_chinese_varieties_count_as_chinese():
    f = LanguageFilter(field="prompt", languages=["zh"])
    assert f.detect("佢哋今日下晝去公園散步咗未呀？")[0] == "zh"  # Cantonese, labelled yue by the detector
    assert run_filter(f, prompts("佢哋今日下晝去公園散步咗未呀？", "他们今天下午去公园散步了吗")) == [KEEP, KEEP]


def test_short_text_is_kept_as_undecidable():
    f = LanguageFilter(field="response", languages=["en"])
    answers = [
        make_record("Where were the 2016 Olympics?", "Rio de Janeiro"),
        make_record("6 x 7?", "42"),
        make_record("Translate 'thanks' to German.", "Danke"),
    ]
    assert run_filter(f, answers) == [KEEP, KEEP, KEEP]
    # what min_chars guards against: a place name read as Portuguese
    assert run_filter(LanguageFilter(field="response", min_chars=0), answers) == [wrong("pt", "0.52", "en"), KEEP, KEEP]


def test_unsure_verdicts_are_kept():
    spanish, german, short_german = prompts(
        "¿Cuál es la capital de Francia?", "Nenne drei Primzahlen.", "Erkläre Rekursion."
    )
    assert run_filter(LanguageFilter(field="prompt"), [spanish, german]) == [wrong("es", "0.68", "en"), KEEP]
    assert run_filter(LanguageFilter(field="prompt", min_confidence=0.9), [spanish]) == [KEEP]
    assert run_filter(LanguageFilter(field="prompt", min_confidence=0.3), [german]) == [wrong("de", "0.33", "en")]
    # why a floor at all: on short text the detector's guesses are sometimes wrong, but then unsure
    assert run_filter(
        LanguageFilter(field="prompt", languages=["de"], min_confidence=0.0, min_chars=0), [short_german]
    ) == [wrong("sv", "0.21", "de")]
    assert run_filter(LanguageFilter(field="prompt", languages=["de"]), [short_german]) == [KEEP]


def test_code_is_not_read_as_language():
    response = (
        'Print the greeting like this:\n```js\nconst mensaje = "Hola mundo, bienvenidos a la aplicación";\n'
        "console.log(mensaje);\n```"
    )
    f = LanguageFilter(field="response")
    assert f.detect(response)[0] == "es"  # what the detector says with the code left in
    assert run_filter(
        f,
        [
            make_record("Show me a greeting in JavaScript.", response),
            make_record("q", "`SELECT nombre, apellido FROM usuarios`"),
        ],
    ) == [KEEP, KEEP]
    german = SENTENCES["de"] + "\n```python\nfor device in network.devices:\n    print(device.address)\n```"
    assert run_filter(f, [make_record("q", german)]) == [wrong("de", "1.00", "en")]


def test_field_both_and_missing_fields():
    f = LanguageFilter(field="both", languages=["en"])
    assert run_filter(f, [make_record(SENTENCES["en"], SENTENCES["en"]), make_record(SENTENCES["en"])]) == [
        KEEP,
        Drop("missing field: no response to read"),
    ]
    assert run_filter(LanguageFilter(), [make_record(SENTENCES["en"], "")]) == [Drop("missing field: empty response")]


def test_bad_options():
    with pytest.raises(ValidationError, match="language\n"):
        LanguageFilter(language=["en"])
    with pytest.raises(ValidationError, match="languages"):
        LanguageFilter(languages=[])
    with pytest.raises(ValidationError, match="min_confidence"):
        LanguageFilter(min_confidence=2)
    with pytest.raises(PluginError, match="the detector knows no language 'eng'; use ISO 639-1 codes"):
        LanguageFilter(languages=["eng"]).setup(PluginContext(base_dir=Path.cwd(), progress=False))


def test_missing_dependency_names_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "py3langid", None)  # as if py3langid were not installed
    monkeypatch.delitem(sys.modules, "py3langid.langid", raising=False)
    with pytest.raises(PluginError, match=r"needs py3langid.*pip install 'distill\[language\]'"):
        LanguageFilter().setup(PluginContext(base_dir=Path.cwd(), progress=False))
