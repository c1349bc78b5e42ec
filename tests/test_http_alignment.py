"""`"return_alignment": true` on `/v1/translate` over real HTTP: the engine's cross-attention
weights with the tokenizer's token strings as labels, for greedy and beam search; absent unless
asked; refused where it does not apply; `/v1/models` names the default model of each task (the
page at `/` reads it), and the page's files are served."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from service.engine import Engine
from tests.http_server import running

TEXTS = ["one two three", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def server(http_repo, tmp_path_factory):
    with running(http_repo, tmp_path_factory.mktemp("logs") / "alignment.log") as s:
        yield s


@pytest.mark.parametrize("options", [{"max_new_tokens": 6}, {"max_new_tokens": 6, "beam_size": 3}])
def test_alignment_is_the_engines_with_token_labels(server, http_repo, options):
    body = {"text": TEXTS, "target_lang": "fr", "return_alignment": True, **options}
    r = server.client.post("/v1/translate", json=body)
    assert r.status_code == 200, r.text
    engine = Engine(http_repo / "tiny")
    want = engine.generate(TEXTS, options, target_lang="fr", return_alignment=True)
    tokenizer = Tokenizer.from_file(str(http_repo / "tiny" / "tokenizer.json"))
    for text, got, expected in zip(TEXTS, r.json()["translations"], want):
        a = got["alignment"]
        assert got["text"] == expected.text
        assert a["source_tokens"] == [">>fr<<", *tokenizer.encode(text).tokens]
        assert a["target_tokens"] == [tokenizer.id_to_token(i) for i in expected.token_ids]
        weights = np.array(a["weights"])
        assert weights.shape == (got["output_tokens"], len(a["source_tokens"]))
        np.testing.assert_allclose(weights, expected.alignment.weights, atol=1e-3)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-3)
        assert all(round(w, 4) == w for row in a["weights"] for w in row)  # 4 decimals, no float32 noise


def test_alignment_only_when_asked(server):
    for flag in ({}, {"return_alignment": False}):
        r = server.client.post("/v1/translate", json={"text": TEXTS, "max_new_tokens": 3, **flag})
        assert r.status_code == 200, r.text
        assert all("alignment" not in t for t in r.json()["translations"])


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/summarize", {"text": "hello", "return_alignment": True}),
        ("/v1/generate", {"model": "tiny", "input": "hello", "return_alignment": True}),
        ("/v1/translate", {"text": "hello", "return_alignment": [True]}),
        ("/v1/translate", {"text": "hello", "return_alignment": "maybe"}),
    ],
)
def test_alignment_refused_where_it_does_not_apply(server, route, body):
    r = server.client.post(route, json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_input" and "return_alignment" in error["message"]


def test_models_name_the_default_of_each_task(server):
    assert server.client.get("/v1/models").json()["defaults"] == {"translate": "tiny", "summarize": "brief"}


def test_page_and_its_assets_are_served_outside_the_api_schema(server):
    page = server.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/page.js"' in page.text and 'id="heatmap"' in page.text
    script = server.client.get("/static/page.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert '"/v1/translate"' in script.text and "return_alignment: true" in script.text
    assert server.client.get("/static/page.css").headers["content-type"].startswith("text/css")
    paths = server.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)
    assert "return_alignment" in str(server.client.get("/openapi.json").json()["components"]["schemas"])
