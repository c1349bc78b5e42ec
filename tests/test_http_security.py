"""Security of a real `heed serve`: optional API keys (bearer, 401 in the one error shape, probes
and metrics open), request ids (accepted or made, in every response, error body and log line),
request text kept out of the log, CORS off by default, the body size limit (413, declared or
chunked) and the request limits; and that no code of the tree loads pickles."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.http.guard import authorized
from service.settings import Settings
from tests.http_server import ROOT, running

KEY, OTHER_KEY = "s3cret-key-one", "another-key-2"
AUTH = {"Authorization": f"Bearer {KEY}"}
SECRET_TEXT = "confidential merger of acme and globex"
HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def server(http_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "security.log"
    env = {
        "HEED_API_KEYS": f"{KEY}, {OTHER_KEY}",
        "HEED_MAX_BODY_BYTES": "4096",
        "HEED_MAX_INPUT_CHARS": "200",
        "HEED_MAX_TEXTS": "4",
        "HEED_MAX_NEW_TOKENS": "16",
        "HEED_MAX_BEAM_SIZE": "2",
        "HEED_LOG_LEVEL": "debug",
    }
    with running(http_repo, log, **env) as s:
        s.client.headers.update(AUTH)
        yield s


def error_of(response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == type_ and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"},
     {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"Bearer {KEY[:-1]}"}, {"Authorization": "Bearer"}],
)  # fmt: skip
def test_requests_without_a_valid_key_get_401(server, headers):
    r = server.client.post("/v1/translate", json={"text": "hello"}, headers={"Authorization": ""} | headers)
    error_of(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/v1/models", "/openapi.json", "/docs"])
def test_the_api_and_its_docs_need_a_key(server, path):
    assert server.client.get(path, headers={"Authorization": ""}).status_code == 401
    assert server.client.get(path).status_code == 200


def test_every_configured_key_works_and_probes_metrics_and_the_page_files_stay_open(server):
    for key in (KEY, OTHER_KEY):
        r = server.client.post("/v1/translate", json={"text": "hello"}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/page.js", "/static/page.css"):
        assert server.client.get(path, headers={"Authorization": ""}).status_code == 200, path
    assert server.client.get("/static/other.js", headers={"Authorization": ""}).status_code == 401


def test_key_comparison():
    keys = [KEY.encode(), OTHER_KEY.encode()]
    assert authorized(f"Bearer {KEY}".encode(), keys) and authorized(f"bearer  {OTHER_KEY}".encode(), keys)
    assert not authorized(None, keys) and not authorized(b"Bearer", keys) and not authorized(b"Token " + keys[0], keys)


def test_request_ids_are_echoed_or_made_and_in_error_bodies(server):
    r = server.client.post("/v1/translate", json={"text": "hello"}, headers={"X-Request-ID": "client-7.a:b"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-7.a:b"
    made = {server.client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(HEX_ID.fullmatch(i) for i in made)
    for unsafe in ("has space", "x" * 129, "semi;colon"):
        r = server.client.get("/v1/models/nope", headers={"X-Request-ID": unsafe})
        assert HEX_ID.fullmatch(error_of(r, 404, "unknown_model")["request_id"])
    r = server.client.post("/v1/translate", json={"text": ""}, headers={"X-Request-ID": "mine-1"})
    assert error_of(r, 422, "invalid_input")["request_id"] == "mine-1"


def test_request_ids_are_in_the_log_and_request_text_is_not(server):
    ids = []
    for body in (
        {"text": SECRET_TEXT},
        {"text": SECRET_TEXT, "beam_size": 99},
        {"text": [SECRET_TEXT] * 9},
        {"text": SECRET_TEXT, "bogus": SECRET_TEXT},
    ):
        r = server.client.post("/v1/translate", json=body)
        ids.append(r.headers["x-request-id"])
    r = server.client.post("/v1/translate", content=f'{{"text": "{SECRET_TEXT}"'.encode(), headers=AUTH)
    ids.append(r.headers["x-request-id"])
    end = time.monotonic() + 10  # the access line is written just after the response is sent
    while not all(re.search(rf"\[{rid}\]: POST /v1/translate \d{{3}} ", log := server.log.read_text()) for rid in ids):
        assert time.monotonic() < end, f"access lines missing for some of {ids}"
        time.sleep(0.05)
    assert "acme" not in log and "globex" not in log


def test_cors_is_off_by_default(server):
    r = server.client.post("/v1/translate", json={"text": "hello"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in server.client.options("/v1/translate", headers=preflight).headers


def test_cors_allows_only_the_configured_origins(tmp_path, tiny_repo):
    app = create_app(Settings(model_repo=tiny_repo, cors_origins="https://app.example, https://b.example"))
    client = TestClient(app)  # no lifespan: the models do not load, the headers are all this checks
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = client.options("/v1/translate", headers={"Origin": "https://b.example"} | preflight)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://b.example"
    other = client.options("/v1/translate", headers={"Origin": "https://evil.example"} | preflight)
    assert "access-control-allow-origin" not in other.headers
    simple = client.get("/healthz", headers={"Origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


def test_bodies_over_the_limit_get_413_declared_or_chunked(server):
    big = {"text": "word " * 1000}
    error_of(server.client.post("/v1/translate", json=big), 413, "body_too_large")

    def chunks():
        yield b'{"text": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    r = server.client.post("/v1/translate", content=chunks(), headers={"Content-Type": "application/json"})
    error_of(r, 413, "body_too_large")
    assert server.client.post("/v1/translate", json={"text": "hello"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "type_"),
    [
        ({"text": ["a"] * 5}, 413, "input_too_long"),
        ({"text": "a" * 201}, 413, "input_too_long"),
        ({"text": ["a" * 100, "b" * 101]}, 413, "input_too_long"),
        ({"text": "a", "max_new_tokens": 17}, 422, "invalid_options"),
        ({"text": "a", "beam_size": 3}, 422, "invalid_options"),
    ],
)
def test_request_limits(server, body, status, type_):
    error_of(server.client.post("/v1/translate", json=body), status, type_)


def test_limits_admit_requests_at_the_limit(server):
    body = {"text": ["a" * 50] * 4, "max_new_tokens": 16, "beam_size": 2}
    assert server.client.post("/v1/translate", json=body).status_code == 200


# -- no pickle ------------------------------------------------------------------------------------

UNSAFE = [
    re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|joblib|cloudpickle|shelve)\b", re.M),
    re.compile(r"\b(pickle|dill|joblib)\.loads?\("),
    re.compile(r"allow_pickle\s*=\s*True"),
]
TORCH_LOAD = re.compile(r"torch\.load\(")


def unsafe_loads(source: str) -> list[str]:
    """Pickle imports/loads and `torch.load(` calls without `weights_only=True` in a Python source."""
    found = [m.group(0).strip() for pattern in UNSAFE for m in pattern.finditer(source)]
    for m in TORCH_LOAD.finditer(source):
        depth, end = 0, m.end() - 1
        for end in range(m.end() - 1, len(source)):
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            if depth == 0:
                break
        if not re.search(r"weights_only\s*=\s*True", source[m.start() : end]):
            found.append(source[m.start() : end + 1])
    return found


def test_the_pickle_scanner_finds_what_it_must():
    assert unsafe_loads("import pickle\n") and unsafe_loads("x = joblib.load(f)") and unsafe_loads("from dill import x")
    assert unsafe_loads("np.load(p, allow_pickle=True)")
    assert unsafe_loads("torch.load(path, map_location='cpu')") == ["torch.load(path, map_location='cpu')"]
    assert not unsafe_loads("torch.load(str(path), map_location=f(x), weights_only=True)")
    assert not unsafe_loads('"""no pickle loading here"""')


def test_no_code_loads_pickles():
    files = [p for d in ("service", "export", "loadtests") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20
    found = {str(p.relative_to(ROOT)): hits for p in files if (hits := unsafe_loads(p.read_text()))}
    assert found == {}
