"""Text that heed cannot read (lone UTF-16 surrogates, control characters: service/characters.py)
through every text field of every route, over real HTTP: named cases for the surrogates on each
route, then hypothesis sends arbitrary Unicode, surrogate escapes included, through all of them.
No answer may be a 5xx; a refusal is each protocol's 4xx in its own error shape and names the
character; text the rule takes is translated (no refusal mentions the rule), and the server log
holds no traceback."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from service.characters import check_text
from service.errors import InvalidInput
from tests.http_server import running

GENERATED = 1000  # at least this many hypothesis requests (tests/test_http_bad_input.py adds Schemathesis')
RULE = "heed takes Unicode text"  # in every refusal of the rule's, in every protocol


@dataclass(frozen=True)
class Route:
    """One way a text reaches heed: the path, the fields around the text, how they are encoded."""

    path: str
    fields: Callable[[str], dict]
    protocol: str  # native, libretranslate, deepl, openai: the error shape
    form: bool = False  # form-encoded (a list repeats its name), else JSON
    stream: bool = False
    answers_every_good_text: bool = False  # a non-blank text the rule takes is answered 200
    reaches_the_rule: bool = True  # False: refused earlier, whatever the text

    def send(self, client: httpx.Client, text: str) -> httpx.Response:
        """JSON with `\\uXXXX` escapes for what has no UTF-8 form (a hostile client's lone surrogate);
        forms percent-encode such a character's surrogatepass bytes, which are no UTF-8 either."""
        fields = self.fields(text)
        if self.form:
            content = urlencode(fields, doseq=True, encoding="utf-8", errors="surrogatepass").encode()
            kind = "application/x-www-form-urlencoded"
        else:
            content, kind = json.dumps(fields).encode(), "application/json"
        request = client.build_request("POST", self.path, content=content, headers={"Content-Type": kind})
        return client.send(request, stream=self.stream)

    def seen(self, text: str) -> str:
        """The text as the server decodes it: a form's bytes that are no UTF-8 become U+FFFD; JSON's
        escapes of a high and a low surrogate in a row are one character."""
        if self.form:
            return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return json.loads(json.dumps(text))


ROUTES = {
    "native translate": Route(
        "/v1/translate", lambda t: {"model": "tiny", "text": t}, "native", answers_every_good_text=True
    ),
    "native translate list": Route("/v1/translate", lambda t: {"text": ["one", t], "target_lang": "fr"}, "native"),
    "native summarize": Route("/v1/summarize", lambda t: {"text": t}, "native"),
    "native generate": Route(
        "/v1/generate", lambda t: {"model": "tiny", "input": [t]}, "native", answers_every_good_text=True
    ),
    "native generate stream": Route(
        "/v1/generate", lambda t: {"model": "tiny", "input": t, "stream": True}, "native", stream=True
    ),
    "libretranslate json": Route(
        "/translate", lambda t: {"q": t, "source": "en", "target": "de"}, "libretranslate", answers_every_good_text=True
    ),
    "libretranslate list auto": Route(
        "/translate", lambda t: {"q": ["two", t], "source": "auto", "target": "es"}, "libretranslate"
    ),
    "libretranslate form": Route(
        "/translate", lambda t: {"q": t, "source": "en", "target": "fr"}, "libretranslate", form=True
    ),
    "libretranslate html": Route(
        "/translate",
        lambda t: {"q": t, "source": "auto", "target": "de", "format": "html"},
        "libretranslate",
        form=True,
    ),
    "libretranslate detect": Route("/detect", lambda t: {"q": t}, "libretranslate"),
    "deepl json": Route(
        "/v2/translate",
        lambda t: {"text": [t], "target_lang": "DE", "source_lang": "EN"},
        "deepl",
        answers_every_good_text=True,
    ),
    "deepl form auto": Route("/v2/translate", lambda t: {"text": ["one", t], "target_lang": "FR"}, "deepl", form=True),
    "deepl html": Route("/v2/translate", lambda t: {"text": [t], "target_lang": "ES", "tag_handling": "html"}, "deepl"),
    "deepl xml": Route(
        "/v2/translate",
        lambda t: {"text": [t], "target_lang": "DE", "tag_handling": "xml", "ignore_tags": "code"},
        "deepl",
        form=True,
    ),
    "openai completions": Route("/v1/completions", lambda t: {"model": "tiny", "prompt": t, "max_tokens": 2}, "openai"),
    "openai completions stream": Route(
        "/v1/completions",
        lambda t: {"model": "tiny", "prompt": [t], "max_tokens": 2, "stream": True},
        "openai",
        stream=True,
    ),
    "openai chat": Route(  # the test models have no chat template: refused before validation
        "/v1/chat/completions",
        lambda t: {"model": "tiny", "messages": [{"role": "user", "content": t}]},
        "openai",
        reaches_the_rule=False,
    ),
}


@pytest.fixture(scope="module")
def server(http_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "hostile-text.log"
    env = {
        "HEED_MAX_NEW_TOKENS": "4",  # generated requests stay cheap to decode
        "HEED_MAX_TEXTS": "8",
        "HEED_MAX_INPUT_CHARS": "2000",
        "HEED_KV_ROWS": "16",
        "HEED_QUEUE_SIZE": "1024",
    }
    with running(http_repo, log, **env) as s:
        s.log_path = log
        yield s
    assert "Traceback" not in log.read_text()


def error_message(route: Route, response: httpx.Response) -> str:
    """The refusal's message, after checking the protocol's error shape."""
    body = response.json()
    if route.protocol == "libretranslate":
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        return body["error"]
    if route.protocol == "deepl":
        assert set(body) == {"message"} and isinstance(body["message"], str), body
        return body["message"]
    error = body["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str), body
    if route.protocol == "native":
        assert set(error) == {"type", "message", "request_id"}, body
        assert error["request_id"] == response.headers["x-request-id"]
    return error["message"]


def refused_character(text: str) -> str | None:
    """`U+XXXX` of the character the rule refuses first, or None when the rule takes the text."""
    try:
        check_text(text, "text")
    except InvalidInput as e:
        return e.message.split(", ")[1]
    return None


def check(route: Route, response: httpx.Response, text: str) -> int:
    """The properties every answer has; returns its status."""
    status = response.status_code
    if route.stream and status == 200:
        data = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
        assert data, "an empty stream"
        for payload in data:  # every event is JSON (OpenAI's last one is `[DONE]`), and the stream ends
            assert payload == "[DONE]" or isinstance(json.loads(payload), dict), payload
        return status
    response.read()
    assert status < 500, f"{status} for {text!r}: {response.text[:300]}"
    text = route.seen(text)
    refused = refused_character(text)
    if status >= 400:
        message = error_message(route, response)
        if refused is None:
            assert RULE not in message, (text, message)
        elif text.strip() and route.reaches_the_rule:
            assert refused in message and RULE in message, (text, message)
    elif refused is not None:
        raise AssertionError(f"{route.path} answered {status} to {text!r}, which holds {refused}")
    if route.answers_every_good_text and refused is None and text.strip():
        assert status == 200, f"{status} for {text!r}: {response.text[:300]}"
    return status


SURROGATES = {
    "lone high surrogate": "one \ud800 two",
    "lone low surrogate": "\udfff",
    "a pair in the wrong order": "three \ude00\ud83d",
    "a surrogate and a NUL": "a\x00\ud800",
}


@pytest.mark.parametrize("name", ROUTES)
@pytest.mark.parametrize("text", SURROGATES.values(), ids=list(SURROGATES))
def test_surrogates_are_refused_on_every_route(server, name, text):
    """A form cannot carry a surrogate (its bytes are no UTF-8: they arrive as U+FFFD), JSON can."""
    route = ROUTES[name]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = route.send(client, text)
        status = check(route, response, text)
        assert status in (400, 422) or route.form


@pytest.mark.parametrize("name", ROUTES)
def test_a_surrogate_pair_escape_is_one_character_and_is_answered(server, name):
    """JSON's `"\\ud83d\\ude00"` is 😀, a character like any other."""
    route = ROUTES[name]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = route.send(client, "one 😀")
        assert check(route, response, "one 😀") in ((200,) if route.reaches_the_rule else (400, 422)), response.text


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/translate", {"text": "one", "target_lang": "\ud800"}, 422),
        ("/translate", {"q": "one", "source": "en", "target": "de", "format": "\ud800"}, 400),
        ("/translate", {"q": "one", "source": "en", "target": "\udc00"}, 400),
        ("/v2/translate", {"text": ["one"], "target_lang": "\ud800"}, 400),
        ("/v2/translate", {"text": ["one"], "target_lang": "DE", "tag_handling": "\ud800"}, 400),
    ],
)
def test_surrogates_in_other_fields_are_quoted_as_escapes_in_the_refusal(server, path, body, status):
    """Messages that quote a field's value as sent: the error builder writes what has no UTF-8 form
    as an escape (LibreTranslate's format message and the language pair's quote it unescaped)."""
    r = server.client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert "\\ud" in r.text.lower()


def test_a_surrogate_as_a_field_name_is_a_4xx(server):
    for path, body in [("/v1/translate", {"text": "one", "\ud800": 1}), ("/translate", {"q": "one", "\udfff": "x"})]:
        r = server.client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, r.text


PIECES = st.one_of(
    st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\x1b", "\x7f", "\x85", "\x9c", "\t", "\n"]),
    st.sampled_from(["\u2028", "\u202e", "\u200d", "\ufeff", "\ufffe", "\U0010ffff", "\ufdfa", "e\u0301", "<b>", "&"]),
    st.characters(exclude_categories=()),  # every code point, surrogates included
)
TEXTS = st.lists(PIECES, min_size=1, max_size=40).map("".join)


def test_arbitrary_unicode_through_every_route_gets_no_5xx(server):
    statuses: Counter = Counter()
    per_route = GENERATED // len(ROUTES) + 1

    def run(client: httpx.Client, name: str, route: Route) -> None:
        @settings(
            max_examples=per_route,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(text=TEXTS)
        def send(text: str) -> None:
            response = route.send(client, text)
            try:
                statuses[name, check(route, response, text)] += 1
            finally:
                response.close()

        send()

    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name, route in ROUTES.items():
            run(client, name, route)
    assert sum(statuses.values()) >= GENERATED, statuses
    for name, route in ROUTES.items():  # each route both refused texts and answered others
        assert statuses[name, 200] > 0 or not route.reaches_the_rule, (name, statuses)
        assert statuses[name, 400] + statuses[name, 422] > 0, (name, statuses)
