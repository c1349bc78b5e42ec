"""DeepL's API v2 over real HTTP, on the default models behind an API key, driven by the official
`deepl` client (given heed's URL as `server_url`) and by the bodies DeepL documents."""

from __future__ import annotations

import deepl
import pytest

from tests.http_server import running
from tests.test_markup import elements, html_tree, xml_tree

KEY = "deepl-secret"
AUTH = {"Authorization": f"DeepL-Auth-Key {KEY}"}
TEXTS = ["one hundred and twenty-three", "four thousand five hundred", "seventy-seven"]


@pytest.fixture(scope="module")
def server(default_repo, tmp_path_factory):
    with running(default_repo, tmp_path_factory.mktemp("logs") / "deepl.log", HEED_API_KEYS=KEY) as s:
        yield s


@pytest.fixture(scope="module")
def translator(server):
    """The official client, without its retries (it retries 429 and 5xx with seconds of backoff)
    and with a timeout that a loaded test machine does not reach."""
    saved = deepl.http_client.max_network_retries, deepl.http_client.min_connection_timeout
    deepl.http_client.max_network_retries, deepl.http_client.min_connection_timeout = 0, 60.0
    client = deepl.Translator(KEY, server_url=server.url)
    yield client
    client.close()
    deepl.http_client.max_network_retries, deepl.http_client.min_connection_timeout = saved


def native(server, texts: list[str], target: str, **fields) -> list[str]:
    body = {"model": "heed-numbers", "text": texts, "target_lang": target} | fields
    r = server.client.post("/v1/translate", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    return [t["text"] for t in r.json()["translations"]]


def deepl_post(server, path: str, **kwargs):
    return server.client.post(path, headers=AUTH, **kwargs)


def test_the_client_translates_a_string_and_a_list_like_the_native_api(translator, server):
    one = translator.translate_text(TEXTS[0], target_lang="DE")
    assert one.text == native(server, TEXTS[:1], "de")[0] == "einhundertdreiundzwanzig"
    assert one.detected_source_lang == "EN" and one.billed_characters == len(TEXTS[0])
    many = translator.translate_text(TEXTS, target_lang="FR", source_lang="EN")
    assert [r.text for r in many] == native(server, TEXTS, "fr")
    assert [r.detected_source_lang for r in many] == ["EN"] * 3
    assert [r.billed_characters for r in many] == [len(t) for t in TEXTS]


@pytest.mark.parametrize(("target", "code"), [("ES-419", "es"), ("es", "es"), ("DE-AT", "de"), ("fr_ca", "fr")])
def test_regional_and_lowercase_targets_fall_back_to_the_language(translator, server, target, code):
    assert translator.translate_text(TEXTS[2], target_lang=target).text == native(server, TEXTS[2:], code)[0]


def test_the_client_lists_source_and_target_languages(translator):
    assert [(lang.code, lang.name) for lang in translator.get_source_languages()] == [("EN", "English")]
    targets = [(lang.code, lang.name, lang.supports_formality) for lang in translator.get_target_languages()]
    assert targets == [("DE", "German", False), ("ES", "Spanish", False), ("FR", "French", False)]


def test_usage_counts_the_characters_translated_and_never_reaches_its_limit(translator):
    before = translator.get_usage()
    translator.translate_text(TEXTS, target_lang="ES")
    after = translator.get_usage()
    assert after.character.count == before.character.count + sum(len(t) for t in TEXTS)
    assert after.character.valid and not after.any_limit_reached and after.character.limit > 10**15


def test_a_wrong_or_missing_key_is_403_in_deepl_shape(server):
    with pytest.raises(deepl.AuthorizationException):
        deepl.Translator("wrong", server_url=server.url).translate_text(TEXTS[0], target_lang="DE")
    for headers in ({}, {"Authorization": "DeepL-Auth-Key wrong"}, {"Authorization": KEY}):
        for path in ("/v2/translate", "/v2/languages", "/v2/usage"):
            r = server.client.post(path, data={"text": "one", "target_lang": "DE"}, headers=headers)
            assert r.status_code == 403 and set(r.json()) == {"message"}, r.text
    assert server.client.post("/v1/translate", json={"text": "one"}).status_code == 401  # heed's own API: as before
    bearer = server.client.get("/v2/usage", headers={"Authorization": f"Bearer {KEY}"})  # the guard's scheme works too
    assert bearer.status_code == 200 and set(bearer.json()) == {"character_count", "character_limit"}


def test_form_bodies_repeat_text_and_json_bodies_list_it(server):
    form = deepl_post(server, "/v2/translate", data={"text": TEXTS, "target_lang": "DE", "source_lang": "EN"})
    assert form.status_code == 200, form.text
    want = native(server, TEXTS, "de")
    assert form.json() == {"translations": [{"detected_source_language": "EN", "text": t} for t in want]}
    single = deepl_post(server, "/v2/translate", data={"text": TEXTS[1], "target_lang": "DE"})
    assert [t["text"] for t in single.json()["translations"]] == want[1:2]
    billed = deepl_post(
        server, "/v2/translate", json={"text": TEXTS[:2], "target_lang": "de", "show_billed_characters": True}
    )
    assert [t["billed_characters"] for t in billed.json()["translations"]] == [len(t) for t in TEXTS[:2]]
    blank = deepl_post(server, "/v2/translate", json={"text": ["", TEXTS[0], "  "], "target_lang": "DE"})
    assert [t["text"] for t in blank.json()["translations"]] == ["", want[0], "  "]  # blank texts come back as sent


def test_html_keeps_its_markup_and_ignore_tags_are_left_as_written(translator, server):
    html = '<p>one hundred and <b>twenty</b>-three <x-name>seventy-seven</x-name></p><p translate="no">two</p>'
    result = translator.translate_text(html, target_lang="DE", tag_handling="html", ignore_tags=["x-name"])
    tree = html_tree(result.text)
    assert elements(tree) == elements(html_tree(html)) and result.detected_source_lang == "EN"
    # the sentence cut by <b> is translated whole, <b> around the words it wraps; the ignored tag ends it
    [whole], [twenty] = native(server, ["one hundred and twenty-three"], "de"), native(server, ["twenty"], "de")
    at = whole.lower().index(twenty.lower())
    assert tree[0] == (
        "p",
        (),
        [
            ("#text", whole[:at]),
            ("b", (), [("#text", twenty)]),
            ("#text", f"{whole[at + len(twenty) :]} "),
            ("x-name", (), [("#text", "seventy-seven")]),
        ],
    )
    assert tree[1] == html_tree(html)[1]  # translate="no"


def test_xml_keeps_its_tree_and_blank_documents_come_back(server):
    xml = (
        '<doc><t id="1">four thousand five hundred</t><skip>seven</skip><t>seventy-seven</t>'
        '<t>one hundred and <x:b xmlns:x="urn:x" k="v">twenty</x:b>-three</t></doc>'
    )
    body = {"text": [xml, ""], "target_lang": "FR", "tag_handling": "xml", "ignore_tags": "skip,other"}
    r = deepl_post(server, "/v2/translate", json=body)
    assert r.status_code == 200, r.text
    translated, empty = (t["text"] for t in r.json()["translations"])
    four, seventy, whole, twenty = native(
        server, ["four thousand five hundred", "seventy-seven", "one hundred and twenty-three", "twenty"], "fr"
    )
    # in mixed content an element is inline: its sentence is translated whole, the element put back in it
    at = whole.lower().index(twenty.lower())
    cut = f'{whole[:at]}<x:b xmlns:x="urn:x" k="v">{twenty}</x:b>{whole[at + len(twenty) :]}'
    assert empty == "" and xml_tree(translated) == xml_tree(
        f'<doc><t id="1">{four}</t><skip>seven</skip><t>{seventy}</t><t>{cut}</t></doc>'
    )


def test_languages_by_query_form_or_json_and_a_bad_type(server):
    by_query = server.client.get("/v2/languages", params={"type": "target"}, headers=AUTH)
    by_form = deepl_post(server, "/v2/languages", data={"type": "target"})
    by_json = deepl_post(server, "/v2/languages", json={"type": "target"})
    assert by_query.json() == by_form.json() == by_json.json() and [t["language"] for t in by_json.json()] == [
        "DE",
        "ES",
        "FR",
    ]
    assert server.client.get("/v2/languages", headers=AUTH).json() == [{"language": "EN", "name": "English"}]
    bad = server.client.get("/v2/languages", params={"type": "both"}, headers=AUTH)
    assert bad.status_code == 400 and "type" in bad.json()["message"]


@pytest.mark.parametrize(("split", "native_split"), [("0", False), ("1", True), ("nonewlines", False), (None, True)])
def test_split_sentences_maps_to_heeds_switch(server, split, native_split):
    """A line break ends a sentence with `1` (the default); with `nonewlines` it does not, so this
    text, one sentence over two lines, is translated whole, as with `0`."""
    text = "one hundred\nand twenty-three"
    body = {"text": [text], "target_lang": "FR"} | ({"split_sentences": split} if split is not None else {})
    r = deepl_post(server, "/v2/translate", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["translations"][0]["text"] == native(server, [text], "fr", split_sentences=native_split)[0]


@pytest.mark.parametrize(
    "fields",
    [
        {"formality": "default"},
        {"formality": "prefer_less"},
        {"formality": "PREFER_MORE"},
        {"preserve_formatting": True},
        {"context": "numbers in words"},
        {"model_type": "quality_optimized"},
        {"outline_detection": False, "ignore_tags": ["x"]},
        {"not_a_deepl_parameter": 1},
    ],
)
def test_options_heed_cannot_honour_but_deepl_would_accept_are_ignored(server, fields):
    r = deepl_post(server, "/v2/translate", json={"text": TEXTS[:1], "target_lang": "ES"} | fields)
    assert r.status_code == 200, r.text
    assert r.json()["translations"][0]["text"] == native(server, TEXTS[:1], "es")[0]


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"target_lang": "DE"}, 400, "Parameter 'text' not specified"),
        ({"text": [], "target_lang": "DE"}, 400, "Parameter 'text' not specified"),
        ({"text": ["one"]}, 400, "Parameter 'target_lang' not specified"),
        ({"text": ["one"], "target_lang": "JA"}, 400, "this server's are DE, ES, FR"),
        ({"text": ["one"], "target_lang": "DE", "source_lang": "JA"}, 400, "this server's are EN"),
        ({"text": [1, 2], "target_lang": "DE"}, 400, "list of strings"),
        ({"text": ["<b>one</i>"], "target_lang": "DE", "tag_handling": "xml"}, 400, "XML document is not well-formed"),
        ({"text": ["one"], "target_lang": "DE", "tag_handling": "html", "ignore_tags": [1]}, 400, "ignore_tags"),
        ({"text": ["one"], "target_lang": "DE", "tag_handling": "markdown"}, 400, "'tag_handling' not supported"),
        ({"text": ["one"], "target_lang": "DE", "formality": "more"}, 400, "'formality' is not supported"),
        ({"text": ["one"], "target_lang": "DE", "formality": "casual"}, 400, "'formality' not supported"),
        ({"text": ["one"], "target_lang": "DE", "source_lang": "EN", "glossary_id": "g1"}, 400, "glossary_id"),
        ({"text": ["one"], "target_lang": "DE", "custom_instructions": ["be brief"]}, 400, "custom_instructions"),
        ({"text": ["one"], "target_lang": "DE", "split_sentences": "2"}, 400, "'split_sentences' not supported"),
        ({"text": ["one " * 200], "target_lang": "DE"}, 413, "at most"),
    ],
)
def test_bad_requests_are_answered_in_deepl_shape(server, fields, status, words):
    r = deepl_post(server, "/v2/translate", json=fields)
    assert r.status_code == status and list(r.json()) == ["message"] and words in r.json()["message"], r.text
    assert r.headers["x-request-id"]


def test_the_client_reports_bad_requests_with_the_message(translator):
    with pytest.raises(deepl.DeepLException, match="this server's are DE, ES, FR"):
        translator.translate_text(TEXTS[0], target_lang="JA")
    with pytest.raises(deepl.DeepLException, match="not well-formed"):
        translator.translate_text("<p>one", target_lang="DE", tag_handling="xml")


def test_translations_are_counted_by_route(server):
    labels = {"model": "heed-numbers", "route": "/v2/translate", "status": "200"}
    before = server.sample("heed_requests_total", **labels)
    deepl_post(server, "/v2/translate", json={"text": ["two"], "target_lang": "FR"})
    assert server.sample("heed_requests_total", **labels) == before + 1
    refused = {"model": "", "route": "/v2/translate", "status": "400"}
    before = server.sample("heed_requests_total", **refused)
    deepl_post(server, "/v2/translate", json={"text": ["two"]})
    assert server.sample("heed_requests_total", **refused) == before + 1
