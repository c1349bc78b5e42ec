"""Bad input against a real `heed serve`: explicit hostile bodies (invalid UTF-8, over the size
limit, deeply nested JSON, NaN/inf, negative and huge numbers, lists over the limits, unknown
model, empty text, lone surrogates and control characters) each get the right 4xx in the one error
shape; then Schemathesis generates over a thousand requests from heed's own OpenAPI schema, to
every operation in it, and none may get a 5xx. The LibreTranslate and DeepL routes read their
fields from the raw body (JSON, form or query: service/http/fields.py); the schema describes those
bodies (service/http/field_schemas.py), so Schemathesis sends them generated JSON and form bodies
too, as tests/test_http_hostile_text.py's hypothesis test does with hostile text."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core import NotSet

from tests.http_server import running

GENERATED = 1000  # at least this many Schemathesis requests
EXAMPLES = {
    "POST /v1/translate": 300,
    "POST /v1/summarize": 180,
    "POST /v1/generate": 300,
    "POST /v1/completions": 150,
    "POST /v1/chat/completions": 50,
    "GET /v1/models/{name}": 50,
    "POST /translate": 120,  # LibreTranslate's and DeepL's bodies: service/http/field_schemas.py
    "POST /detect": 40,
    "POST /v2/translate": 120,
}
RETARGETED = ("POST /v1/generate", "POST /v1/completions")  # a share is sent to served models, to decode


@pytest.fixture(scope="module")
def server(http_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "bad-input.log"
    env = {
        "HEED_MAX_NEW_TOKENS": "4",  # generated requests stay cheap to decode
        "HEED_MAX_TEXTS": "4",
        "HEED_MAX_BODY_BYTES": "65536",
        "HEED_MAX_INPUT_CHARS": "2000",
        "HEED_KV_ROWS": "16",
        "HEED_QUEUE_SIZE": "1024",
    }
    with running(http_repo, log, **env) as s:
        yield s


def nested(depth: int) -> bytes:
    return b'{"text": ' + b"[" * depth + b'"a"' + b"]" * depth + b"}"


RAW = [
    ("invalid UTF-8 in a string", b'{"text": "caf\xe9 \xff\xfe"}', 422, "invalid_input"),
    ("invalid UTF-8 in a key", b'{"te\xffxt": "hello"}', 422, "invalid_input"),
    ("nested 30000 deep", nested(30_000), 422, "invalid_input"),
    ("nested 60 deep", nested(60), 422, "invalid_input"),
    ("NaN", b'{"text": "a", "temperature": NaN}', 422, "invalid_options"),
    ("Infinity", b'{"text": "a", "timeout": Infinity}', 422, "invalid_input"),
    ("-Infinity", b'{"text": "a", "top_p": -Infinity}', 422, "invalid_options"),
    ("1e400 (inf)", b'{"text": "a", "length_penalty": 1e400}', 422, "invalid_options"),
    ("a 5000-digit number", b'{"text": "a", "seed": 1' + b"0" * 5000 + b"}", 422, "invalid_input"),
    ("not JSON", b"text=hello", 422, "invalid_input"),
    ("truncated JSON", b'{"text": "hel', 422, "invalid_input"),
    ("JSON array", b'["hello"]', 422, "invalid_input"),
    ("JSON null", b"null", 422, "invalid_input"),
    ("empty body", b"", 422, "invalid_input"),
    ("over the size limit", b'{"text": "' + b"a" * 70_000 + b'"}', 413, "body_too_large"),
    ("a lone surrogate escape", b'{"text": "a \\ud800 b"}', 422, "invalid_input"),
    ("a lone low surrogate in a list", b'{"text": ["a", "\\udc00"]}', 422, "invalid_input"),
]


@pytest.mark.parametrize(("body", "status", "type_"), [r[1:] for r in RAW], ids=[r[0] for r in RAW])
def test_hostile_bodies_get_their_4xx(server, body, status, type_):
    r = server.client.post("/v1/translate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == type_ and error["message"] and error["request_id"] == r.headers["x-request-id"]


CASES = [
    ("negative max_new_tokens", {"max_new_tokens": -1}, 422, "invalid_options"),
    ("zero beam", {"beam_size": 0}, 422, "invalid_options"),
    ("negative seed", {"seed": -1}, 422, "invalid_options"),
    ("negative timeout", {"timeout": -5}, 422, "invalid_input"),
    ("huge max_new_tokens", {"max_new_tokens": 10**30}, 422, "invalid_options"),
    ("huge beam", {"beam_size": 2**63}, 422, "invalid_options"),
    ("seed past 64 bits", {"seed": 2**64}, 422, "invalid_options"),
    ("huge top_k", {"top_k": 10**20}, 200, None),  # more than the vocabulary: no cut
    ("huge timeout", {"timeout": 1e308}, 200, None),  # capped by HEED_REQUEST_TIMEOUT
    ("texts over the limit", {"text": ["a"] * 5}, 413, "input_too_long"),
    ("characters over the limit", {"text": "a " * 1001}, 413, "input_too_long"),
    ("stop list over the limit", {"stop": ["x"] * 9}, 422, "invalid_options"),
    ("unknown model", {"model": "no-such-model"}, 404, "unknown_model"),
    ("a model of another task", {"model": "brief"}, 422, "wrong_task"),
    ("empty text", {"text": ""}, 422, "invalid_input"),
    ("blank text", {"text": " \n\t "}, 422, "invalid_input"),
    ("empty list", {"text": []}, 422, "invalid_input"),
    ("a blank text in a list", {"text": ["hello", ""]}, 422, "invalid_input"),
    ("text of the wrong type", {"text": 5}, 422, "invalid_input"),
    ("a nested list", {"text": [["hello"]]}, 422, "invalid_input"),
    ("unknown field", {"temprature": 0.5}, 422, "invalid_input"),
    ("unknown target language", {"target_lang": "xx"}, 422, "invalid_options"),
    ("NUL", {"text": "a\x00b"}, 422, "invalid_input"),
    ("an escape sequence", {"text": "a\x1b[31mb"}, 422, "invalid_input"),
    ("a C1 control (cp1252 read as Latin-1)", {"text": "\x93quoted\x94"}, 422, "invalid_input"),
    ("tabs, line breaks and bidirectional marks", {"text": "a\tb\r\nc\x0b\x0c\u202ed\u200f"}, 200, None),
    ("a surrogate pair escape is one character", {"text": "a \U0001f600"}, 200, None),
    ("decomposed accents (NFD)", {"text": "cafe\u0301 a\u0300 la carte"}, 200, None),
    ("NFKC expands it past the token limit", {"text": "\ufdfa" * 1000}, 413, "input_too_long"),
]


@pytest.mark.parametrize(("fields", "status", "type_"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_values_get_their_4xx(server, fields, status, type_):
    r = server.client.post("/v1/translate", json={"text": "hello"} | fields)
    assert r.status_code == status, r.text
    if type_ is not None:
        assert r.json()["error"]["type"] == type_, r.text


def retarget(case, model: str):
    """A generated case pointed at a served model, so that generation reaches the decoder too."""
    if isinstance(case.body, dict):
        case.body = {**case.body, "model": model}
    return case


def error_key(label: str) -> str:
    """The error shape of the route's protocol: DeepL's `{"message"}`, else `{"error"}`."""
    return "message" if label.split()[-1].startswith("/v2/") else "error"


def test_schemathesis_finds_no_5xx(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}
    assert set(EXAMPLES) <= set(operations)
    statuses: Counter = Counter()
    sent: Counter = Counter()
    with_body: Counter = Counter()  # requests that carried a generated body
    failures: list[str] = []

    def run(label: str, strategy) -> None:
        @settings(
            max_examples=EXAMPLES.get(label, 10),
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case) -> None:
            response = case.call(base_url=server.url, timeout=60)
            statuses[response.status_code] += 1
            sent[label] += 1
            with_body[label] += bool(case.body) and not isinstance(case.body, NotSet)
            if response.status_code == 504 and isinstance(case.body, dict) and case.body.get("timeout"):
                pass  # the request's own deadline (generated values go down to 5e-324 s): 504 is its answer
            elif response.status_code >= 500:
                failures.append(f"{label} {response.status_code} {case.body!r}: {response.text[:300]}")
            elif response.status_code >= 400 and error_key(label) not in response.json():
                failures.append(f"{label} {response.status_code} not in the error shape: {response.text[:300]}")

        call()

    for label, operation in operations.items():
        strategy = operation.as_strategy()
        if label in RETARGETED:
            models = st.sampled_from(["tiny", "tiny-en", "brief"])
            strategy = st.one_of(strategy, st.tuples(strategy, models).map(lambda pair: retarget(*pair)))
        run(label, strategy)

    assert set(sent) == set(operations), set(operations) - set(sent)  # every operation was sent requests
    field_routes = ("POST /translate", "POST /detect", "POST /v2/translate")  # bodies of field_schemas.py
    assert all(with_body[label] > EXAMPLES[label] // 2 for label in field_routes), with_body
    assert failures == [], "\n".join(failures)
    assert sum(statuses.values()) >= GENERATED, statuses
    assert statuses[200] > 50 and statuses[422] > 50, statuses  # both valid and invalid requests were made
