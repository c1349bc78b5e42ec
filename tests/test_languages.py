"""Language codes across protocols and checkpoints (service/languages.py, DeepL's spelling in
service/http/deepl.py): case, regions, ISO 639-1 against NLLB's codes, and scripts."""

from __future__ import annotations

import pytest

from service import languages
from service.http.deepl import deepl_code
from service.languages import match, name

NLLB = ["deu_Latn", "eng_Latn", "fra_Latn", "zho_Hans", "zho_Hant", "arb_Arab"]


@pytest.mark.parametrize(
    ("asked", "available", "found"),
    [
        ("DE", ["de", "fr"], "de"),
        ("pt-BR", ["pt", "en"], "pt"),
        ("pt_br", ["pt_br", "pt"], "pt_br"),
        ("de", NLLB, "deu_Latn"),
        ("DE-AT", NLLB, "deu_Latn"),
        ("deu", NLLB, "deu_Latn"),
        ("deu_Latn", ["de", "fr"], "de"),
        ("zh", NLLB, None),  # two scripts: ambiguous
        ("ZH-HANS", NLLB, "zho_Hans"),
        ("zh-hant", NLLB, "zho_Hant"),
        ("ja", NLLB, None),
        ("arb", NLLB, "arb_Arab"),
    ],
)
def test_a_code_names_the_models_code_of_its_language(asked, available, found):
    assert match(asked, available) == found


def test_deepl_spells_model_codes_as_deepl_does_and_they_name_them_back():
    spelled = {code: deepl_code(code, NLLB) for code in NLLB}
    assert spelled == {
        "deu_Latn": "DE",
        "eng_Latn": "EN",
        "fra_Latn": "FR",
        "zho_Hans": "ZH-HANS",
        "zho_Hant": "ZH-HANT",
        "arb_Arab": "ARB",
    }
    assert all(match(deepl, NLLB) == code for code, deepl in spelled.items())
    assert [deepl_code(c) for c in ("en", "pt_br", "es-419")] == ["EN", "PT-BR", "ES-419"]


def test_names_say_the_script_where_the_code_names_one():
    assert [name(c) for c in ("de", "deu_Latn", "zho_Hant", "xx")] == [
        "German",
        "German (Latin)",
        "Chinese (Han (Traditional variant))",
        "xx",
    ]


def test_the_detector_loads_its_model_on_the_first_detection_only(monkeypatch):
    """py3langid's model is 75 MiB in memory: a server whose clients name their languages never loads it."""
    loads = []
    load = languages.LanguageIdentifier.from_model_file
    monkeypatch.setattr(
        languages.LanguageIdentifier, "from_model_file", lambda *a, **k: loads.append(1) or load(*a, **k)
    )
    detector = languages.Detector(["de", "en"])
    assert loads == []
    assert detector.detect("Das ist ein deutscher Satz über das Wetter.")[0].language == "de"
    assert detector.detect("This is an English sentence about the weather.")[0].language == "en"
    assert loads == [1]
