"""Translation features over HTTP on the default models: multi-line and multi-paragraph texts keep
their structure, a document longer than the model's input limit is translated, not refused, and
beam search's alternatives reach the native and LibreTranslate APIs."""

from __future__ import annotations

import pytest

from service.engine import Engine
from tests.http_server import running

NUMBERS = ["seventy-seven", "four thousand five hundred", "one hundred and twenty-three", "nine"]


@pytest.fixture(scope="module")
def server(default_repo, tmp_path_factory):
    with running(default_repo, tmp_path_factory.mktemp("logs") / "documents.log") as s:
        yield s


def translate(server, text: str | list[str], **fields) -> list[str]:
    r = server.client.post("/v1/translate", json={"text": text, "target_lang": "de", **fields})
    assert r.status_code == 200, r.text
    return [t["text"] for t in r.json()["translations"]]


def test_lines_and_paragraphs_keep_their_structure(server):
    alone = translate(server, NUMBERS, split_sentences=False)
    document = f"{NUMBERS[0]}\n\n{NUMBERS[1]}\n  {NUMBERS[2]}\r\n\n\n{NUMBERS[3]}\n"
    [whole] = translate(server, document)
    assert whole == f"{alone[0]}\n\n{alone[1]}\n  {alone[2]}\r\n\n\n{alone[3]}\n"
    lt = server.client.post("/translate", json={"q": document, "source": "en", "target": "de"})
    assert lt.json() == {"translatedText": whole}


def test_a_3000_character_document_is_translated(server):
    lines = [NUMBERS[i % len(NUMBERS)] for i in range(164)]
    document = "\n".join(lines)
    assert len(document) >= 3000
    [whole] = translate(server, document)
    alone = dict(zip(NUMBERS, translate(server, NUMBERS, split_sentences=False)))
    assert whole.split("\n") == [alone[line] for line in lines]
    r = server.client.post("/v1/translate", json={"text": document, "split_sentences": False})
    assert r.status_code == 413 and r.json()["error"]["type"] == "input_too_long"  # as one sequence: over the limit


def test_alternatives_are_the_next_best_of_beam_search(server, default_repo):
    engine = Engine(default_repo / "heed-numbers")
    options = {"beam_size": 3, "num_return_sequences": 3}
    want = engine.generate(NUMBERS[:2], options, target_lang="fr")
    assert all(len(g.alternatives) == 2 and g.text not in g.alternatives for g in want)
    r = server.client.post("/v1/translate", json={"text": NUMBERS[:2], "target_lang": "fr", **options})
    assert [(t["text"], t["alternatives"]) for t in r.json()["translations"]] == [
        (g.text, g.alternatives) for g in want
    ]
    assert "alternatives" not in translate_body(server, NUMBERS[0])["translations"][0]
    lt = server.client.post("/translate", json={"q": NUMBERS[:2], "source": "en", "target": "fr", "alternatives": 2})
    assert lt.json() == {"translatedText": [g.text for g in want], "alternatives": [g.alternatives for g in want]}
    single = server.client.post(
        "/translate", data={"q": NUMBERS[0], "source": "en", "target": "fr", "alternatives": "2"}
    )
    assert single.json() == {"translatedText": want[0].text, "alternatives": want[0].alternatives}


@pytest.mark.parametrize(("body", "status"), [({"num_return_sequences": 2}, 422), ({"alternatives": 9}, 400)])
def test_more_alternatives_than_beams_are_refused(server, body, status):
    route = "/translate" if "alternatives" in body else "/v1/translate"
    fields = {"q": "nine", "source": "en", "target": "de"} if route == "/translate" else {"text": "nine"}
    r = server.client.post(route, json=fields | body)
    assert r.status_code == status, r.text


def translate_body(server, text: str) -> dict:
    return server.client.post("/v1/translate", json={"text": text, "target_lang": "fr"}).json()
