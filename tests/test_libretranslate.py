"""LibreTranslate's API over real HTTP, on the default models behind an API key, driven by the
clients that speak it (libretranslatepy, deep-translator) and by the bodies they send."""

from __future__ import annotations

import urllib.error

import httpx
import pytest
from deep_translator import LibreTranslator
from deep_translator.exceptions import AuthorizationException
from libretranslatepy import LibreTranslateAPI

from tests.http_server import running
from tests.test_markup import elements, html_tree, text_of

KEY = "lt-secret"
TEXTS = ["one hundred and twenty-three", "four thousand five hundred", "seventy-seven"]


@pytest.fixture(scope="module")
def server(default_repo, tmp_path_factory):
    with running(default_repo, tmp_path_factory.mktemp("logs") / "libretranslate.log", HEED_API_KEYS=KEY) as s:
        yield s


def native(server, texts: list[str], target: str) -> list[str]:
    body = {"model": "heed-numbers", "text": texts, "target_lang": target}
    r = server.client.post("/v1/translate", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    return [t["text"] for t in r.json()["translations"]]


def test_libretranslatepy_translates_lists_languages_and_detects(server):
    lt = LibreTranslateAPI(server.url, api_key=KEY)
    want = native(server, TEXTS[:1], "fr")[0]
    assert lt.translate(TEXTS[0], "en", "fr") == want == "cent vingt-trois"
    assert lt.languages() == [{"code": "en", "name": "English", "targets": ["de", "es", "fr"]}]
    [best, *_] = lt.detect("three hundred and one")
    assert best["language"] == "en" and 50 < best["confidence"] <= 100


def test_deep_translator_sends_its_fields_in_the_query_string(server):
    translator = LibreTranslator(source="en", target="de", api_key=KEY, custom_url=f"{server.url}/")
    assert translator.translate(TEXTS[1]) == native(server, TEXTS[1:2], "de")[0]
    with pytest.raises(AuthorizationException):
        LibreTranslator(source="en", target="de", api_key="wrong", custom_url=f"{server.url}/").translate(TEXTS[1])


def test_a_wrong_or_missing_key_is_403_in_libretranslate_shape(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        LibreTranslateAPI(server.url, api_key="wrong").translate(TEXTS[0], "en", "de")
    assert info.value.code == 403
    r = server.client.post("/translate", json={"q": "one", "source": "en", "target": "de"})
    assert r.status_code == 403 and set(r.json()) == {"error"}
    assert server.client.post("/v1/translate", json={"text": "one"}).status_code == 401  # heed's own API: as before


def test_json_list_with_auto_source_is_answered_in_order_with_detected_languages(server):
    body = {"q": TEXTS, "source": "auto", "target": "ES", "api_key": KEY}  # codes are case-insensitive
    r = server.client.post("/translate", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["translatedText"] == native(server, TEXTS, "es")
    detected = r.json()["detectedLanguage"]
    assert [d["language"] for d in detected] == ["en"] * 3 and all(0 <= d["confidence"] <= 100 for d in detected)
    single = server.client.post("/translate", json=body | {"q": TEXTS[2], "target": "es-MX"}).json()
    assert (
        single["translatedText"] == native(server, TEXTS[2:], "es")[0]
        and single["detectedLanguage"]["language"] == "en"
    )


MASTODON = [  # statuses as Mastodon sends them: HTML, a mention marked translate="no", a mention and a link
    "<p>one hundred and <b>twenty</b>-three</p>",
    '<p><span class="h-card" translate="no"><a href="https://social.example/@bob" class="u-url mention">'
    "@<span>bob</span></a></span> four thousand five hundred</p><p>seventy-seven<br>three &amp; <i>two</i></p>",
    '<p>Hello <span class="h-card"><a href="https://social.example/@bob" class="u-url mention">@<span>bob</span></a>'
    '</span> see <a href="https://social.example/x" rel="nofollow noopener" target="_blank">this</a></p>',
]


def test_mastodon_html_is_translated_with_its_markup_kept(server):
    body = {"q": MASTODON, "source": "auto", "target": "de", "format": "html", "api_key": KEY}
    r = server.client.post("/translate", json=body)
    assert r.status_code == 200, r.text
    answered = r.json()
    assert [d["language"] for d in answered["detectedLanguage"]] == ["en"] * 3
    trees = [html_tree(html) for html in answered["translatedText"]]
    assert [elements(tree) for tree in trees] == [elements(html_tree(html)) for html in MASTODON]  # the same markup
    # a sentence cut by a tag reads as the sentence's translation, the tag around the words it wraps
    [whole], [twenty] = native(server, ["one hundred and twenty-three"], "de"), native(server, ["twenty"], "de")
    assert text_of(answered["translatedText"][0]) == whole == "einhundertdreiundzwanzig"
    at = whole.lower().index(twenty.lower())
    assert trees[0] == [("p", (), [("#text", whole[:at]), ("b", (), [("#text", twenty)])])]  # "-three": nothing left
    # runs between other tags, and a block whose tag cannot be put back ("zwei" is twice in the
    # translation of "three & two"), are translated run by run, each in its place and its whitespace
    four, seventy, three_and, two = native(
        server, ["four thousand five hundred", "seventy-seven", "three &", "two"], "de"
    )
    assert native(server, ["three & two"], "de")[0].lower().count(two.lower()) != 1
    mention = html_tree(MASTODON[1])[0][2][0]  # translate="no": left as it was
    assert trees[1] == [
        ("p", (), [mention, ("#text", f" {four}")]),
        ("p", (), [("#text", seventy), ("br", (), []), ("#text", f"{three_and} "), ("i", (), [("#text", two)])]),
    ]
    for tag in ('<span class="h-card"><a href="https://social.example/@bob" class="u-url mention">',
                '<a href="https://social.example/x" rel="nofollow noopener" target="_blank">'):  # fmt: skip
        assert tag in answered["translatedText"][2]  # attributes byte for byte
    single = server.client.post("/translate", json=body | {"q": MASTODON[0], "source": "en", "alternatives": 2})
    assert single.json() == {"translatedText": answered["translatedText"][0], "alternatives": []}


def test_form_and_query_fields_and_the_bearer_header(server):
    form = server.client.post("/translate", data={"q": TEXTS[0], "source": "en", "target": "de", "api_key": KEY})
    query = server.client.post("/translate", params={"q": TEXTS[0], "source": "en", "target": "de", "api_key": KEY})
    bearer = httpx.post(
        f"{server.url}/translate",
        json={"q": TEXTS[0], "source": "en", "target": "de"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    want = native(server, TEXTS[:1], "de")[0]
    assert [r.json() for r in (form, query, bearer)] == [{"translatedText": want}] * 3
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    with_body = server.client.request("GET", "/languages", content=f"api_key={KEY}".encode(), headers=form_type)
    assert with_body.status_code == 200 and with_body.json()[0]["code"] == "en"
    assert server.client.get("/languages").json() == with_body.json()  # no key needed, as in LibreTranslate


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"source": "en", "target": "de"}, "missing q parameter"),
        ({"q": "one", "target": "de"}, "missing source parameter"),
        ({"q": "one", "source": "en", "target": "xx"}, "en -> de, es, fr"),
        ({"q": "one", "source": "ja", "target": "de"}, "no model translates ja"),
        ({"q": "one", "source": "en", "target": "de", "format": "markdown"}, "markdown format is not supported"),
        ({"q": "<p>one</p>" * 65, "source": "en", "target": "de", "format": "html"}, "the documents have 65 texts"),
        ({"q": [1, 2], "source": "en", "target": "de"}, "q must be a string or a list"),
        ({"q": "  ", "source": "en", "target": "de"}, "empty"),
        ({"q": "one " * 200, "source": "en", "target": "de"}, "at most"),
    ],
)
def test_bad_requests_are_400_with_an_error_message(server, fields, words):
    r = server.client.post("/translate", json=fields | {"api_key": KEY})
    assert r.status_code == 400 and list(r.json()) == ["error"] and words in r.json()["error"], r.text
    assert r.headers["x-request-id"]


def test_requests_are_counted_by_route(server):
    before = server.sample("heed_requests_total", model="heed-numbers", route="/translate", status="200")
    server.client.post("/translate", json={"q": "two", "source": "en", "target": "fr", "api_key": KEY})
    after = server.sample("heed_requests_total", model="heed-numbers", route="/translate", status="200")
    assert after == before + 1
