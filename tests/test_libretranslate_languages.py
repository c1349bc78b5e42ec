"""LibreTranslate's `source: auto` over a list whose texts are in different languages, as recent
LibreTranslate detects them: each text over 40 characters alone, shorter ones as the request's
texts together, and each group translated by the model that reads its language. Two models here:
heed-numbers (reads English) and a copy of it that declares French."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.http_server import running

ENGLISH = "one hundred and twenty-three, said the man who had counted them all twice"
FRENCH = "cent vingt-trois, dit l'homme qui les avait tous comptés deux fois de suite"


@pytest.fixture(scope="module")
def server(default_repo, tmp_path_factory):
    repo = tmp_path_factory.mktemp("two-sources")
    shutil.copytree(default_repo / "heed-numbers", repo / "heed-numbers")
    french = shutil.copytree(default_repo / "heed-numbers", repo / "numbers-fr")
    manifest = json.loads((french / "manifest.json").read_text())
    manifest.update(name="numbers-fr", source_languages=["fr"])
    (french / "manifest.json").write_text(json.dumps(manifest))
    with running(repo, tmp_path_factory.mktemp("logs") / "lt-languages.log") as s:
        yield s


def native(server, model: str, text: str) -> str:
    r = server.client.post("/v1/translate", json={"model": model, "text": text, "target_lang": "de"})
    assert r.status_code == 200, r.text
    return r.json()["translations"][0]["text"]


def read_by(server) -> dict[str, float]:
    """Input tokens each model has read (the two share weights: which model read what is here)."""
    return {m: server.sample("heed_input_tokens_total", model=m) for m in ("heed-numbers", "numbers-fr")}


def test_each_long_text_of_a_list_is_detected_and_translated_by_its_languages_model(server):
    english, french = native(server, "heed-numbers", ENGLISH), native(server, "numbers-fr", FRENCH)
    before = read_by(server)
    r = server.client.post("/translate", json={"q": [ENGLISH, FRENCH, ENGLISH], "source": "auto", "target": "de"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [d["language"] for d in answer["detectedLanguage"]] == ["en", "fr", "en"]
    assert answer["translatedText"] == [english, french, english]
    after = read_by(server)
    read = {m: after[m] - before[m] for m in after}
    assert read["heed-numbers"] > 0 and read["numbers-fr"] > 0, read  # each model read its language's texts


def test_short_texts_take_the_language_of_the_whole_list(server):
    short = "six"  # alone it reads as English (0.52); too short to tell: the list together reads as French
    r = server.client.post("/translate", json={"q": [FRENCH, short], "source": "auto", "target": "de"})
    assert r.status_code == 200, r.text
    assert [d["language"] for d in r.json()["detectedLanguage"]] == ["fr", "fr"]
    assert r.json()["translatedText"][1] == native(server, "numbers-fr", short)
