"""The HTTP API against a real `heed serve` (uvicorn subprocess, real HTTP): concurrent requests
give the offline CLI's outputs, lists are answered in order, streaming, routes, every bad input's
4xx in the one error shape, continuous batching (a short request overtakes long ones), client
disconnects freeing KV rows, and metrics consistent with what the clients sent."""

from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.http_server import LONG_TOKENS, long_stream, offline, running, sse_events

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, how are you today?",
    "one two three four five",
    "a long report about the weather",
    "numbers like 12 and 345",
    "the lazy dog sleeps",
    "how are you?",
    "six seven eight nine ten",
    "the weather in the mountains",
    "the sea and the mountains",
    "brown fox",
    "hello",
    "a report about numbers",
    "digits are written like 12",
    "today the dog jumps",
    "world",
]


@pytest.fixture(scope="module")
def server(http_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "api.log"
    with running(http_repo, log, HEED_MAX_NEW_TOKENS="8000", HEED_MAX_TEXTS="8", HEED_KV_ROWS="32") as s:
        yield s


def batch_steps(server) -> tuple[float, float]:
    """(decoder steps, steps that carried one row) so far."""
    count = server.sample("heed_decode_batch_size_count", model="tiny")
    single = server.sample("heed_decode_batch_size_bucket", model="tiny", le="1.0")
    return count, single


def test_concurrent_clients_get_the_offline_outputs_and_share_steps(server, http_repo):
    expected = offline(http_repo / "tiny", TEXTS)
    before = server.metrics()
    steps_before = batch_steps(server)
    barrier = threading.Barrier(len(TEXTS))

    def client(text: str) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            barrier.wait(timeout=30)
            return c.post("/v1/translate", json={"text": text})

    with ThreadPoolExecutor(len(TEXTS)) as pool:
        responses = list(pool.map(client, TEXTS))

    assert [r.status_code for r in responses] == [200] * len(TEXTS)
    for response, want in zip(responses, expected):
        body = response.json()
        assert body["model"] == "tiny"
        [got] = body["translations"]
        assert got == {k: want[k] for k in ("text", "input_tokens", "output_tokens", "finish_reason")}

    after = server.metrics()

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("heed_requests_total", model="tiny", route="/v1/translate", status="200") == len(TEXTS)
    assert delta("heed_request_duration_seconds_count", model="tiny", route="/v1/translate") == len(TEXTS)
    assert delta("heed_input_tokens_total", model="tiny") == sum(w["input_tokens"] for w in expected)
    assert delta("heed_output_tokens_total", model="tiny") == sum(w["output_tokens"] for w in expected)
    assert delta("heed_time_to_first_token_seconds_count", model="tiny") == len(TEXTS)
    steps, single = (a - b for a, b in zip(batch_steps(server), steps_before))
    assert steps > single, "no decoder step carried more than one request"
    assert server.sample("heed_kv_slots_used", model="tiny") == 0
    assert server.sample("heed_queue_depth", model="tiny") == 0


def test_a_list_is_answered_in_order_as_one_batch(server, http_repo):
    texts = TEXTS[:5]
    expected = offline(http_repo / "tiny", texts, "--target-lang", "fr")
    r = server.client.post("/v1/translate", json={"text": texts, "target_lang": "fr"})
    assert r.status_code == 200
    body = r.json()
    assert [t["text"] for t in body["translations"]] == [w["text"] for w in expected]
    assert body["usage"] == {
        "input_tokens": sum(w["input_tokens"] for w in expected),
        "output_tokens": sum(w["output_tokens"] for w in expected),
    }


def test_generate_with_options_matches_the_cli(server, http_repo):
    flags = ["--beam-size", "3", "--max-new-tokens", "12", "--no-repeat-ngram-size", "2"]
    expected = offline(http_repo / "tiny", TEXTS[:2], *flags)
    r = server.client.post(
        "/v1/generate",
        json={"model": "tiny", "input": TEXTS[:2], "beam_size": 3, "max_new_tokens": 12, "no_repeat_ngram_size": 2},
    )
    assert r.status_code == 200
    assert r.json()["generations"] == expected


def test_stream_sends_tokens_then_the_full_text(server, http_repo):
    [expected] = offline(http_repo / "tiny", [TEXTS[1]], "--max-new-tokens", "20", "--stop", "zzz")
    body = {"model": "tiny", "input": TEXTS[1], "max_new_tokens": 20, "stop": ["zzz"], "stream": True}
    with server.client.stream("POST", "/v1/generate", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(r))
    *tokens, (name, final) = events
    assert name == "message" and final["done"] is True
    assert [e["token"]["id"] for _, e in tokens] == expected["token_ids"]
    assert "".join(e["token"]["text"] for _, e in tokens) == final["text"] == expected["text"]
    assert final["finish_reason"] == expected["finish_reason"] == "length"
    assert final["token_ids"] == expected["token_ids"]


def test_summarize_and_default_models(server, http_repo):
    [expected] = offline(http_repo / "brief", ["a long report about the weather in the mountains"])
    r = server.client.post("/v1/summarize", json={"text": "a long report about the weather in the mountains"})
    assert r.status_code == 200
    assert r.json()["model"] == "brief"
    assert r.json()["summaries"][0]["text"] == expected["text"]
    assert server.client.post("/v1/translate", json={"text": "hello"}).json()["model"] == "tiny"
    r = server.client.post("/v1/translate", json={"model": "tiny-en", "text": "hello", "source_lang": "en"})
    assert r.status_code == 200 and r.json()["model"] == "tiny-en"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_type"),
    [
        ("POST", "/v1/translate", {"model": "nope", "text": "hi"}, 404, "unknown_model"),
        ("POST", "/v1/generate", {"model": "nope", "input": "hi"}, 404, "unknown_model"),
        ("POST", "/v1/summarize", {"text": "hello world " * 100}, 413, "input_too_long"),
        ("POST", "/v1/translate", {"text": ["hi"] * 9}, 413, "input_too_long"),
        ("POST", "/v1/translate", {"text": "hi", "beam_size": 0}, 422, "invalid_options"),
        ("POST", "/v1/translate", {"text": "hi", "top_p": 1.5}, 422, "invalid_options"),
        ("POST", "/v1/translate", {"text": "hi", "min_new_tokens": 9, "max_new_tokens": 3}, 422, "invalid_options"),
        ("POST", "/v1/translate", {"text": "hi", "max_new_tokens": 9000}, 422, "invalid_options"),
        ("POST", "/v1/translate", {"text": "hi", "beam_size": 2, "temperature": 0.5}, 422, "invalid_options"),
        ("POST", "/v1/translate", {"text": "hi", "target_lang": "xx"}, 422, "invalid_options"),
        ("POST", "/v1/translate", {"model": "tiny-en", "text": "hi", "source_lang": "fr"}, 422, "invalid_options"),
        ("POST", "/v1/translate", {"text": "hi", "colour": "red"}, 422, "invalid_input"),
        ("POST", "/v1/translate", {"text": "  "}, 422, "invalid_input"),
        ("POST", "/v1/translate", {"text": []}, 422, "invalid_input"),
        ("POST", "/v1/translate", {"text": [1, 2]}, 422, "invalid_input"),
        ("POST", "/v1/translate", {}, 422, "invalid_input"),
        ("POST", "/v1/translate", [1], 422, "invalid_input"),
        ("POST", "/v1/translate", b"{not json", 422, "invalid_input"),
        ("POST", "/v1/translate", {"model": "brief", "text": "hi"}, 422, "wrong_task"),
        ("POST", "/v1/summarize", {"text": "hi", "target_lang": "de"}, 422, "invalid_options"),
        ("POST", "/v1/generate", {"model": "tiny", "input": ["a", "b"], "stream": True}, 422, "invalid_input"),
        ("POST", "/v1/generate", {"model": "tiny", "input": "hi", "timeout": -1}, 422, "invalid_input"),
        ("GET", "/v1/models/nope", None, 404, "unknown_model"),
        ("GET", "/v1/nothing-here", None, 404, "not_found"),
        ("GET", "/v1/translate", None, 405, "method_not_allowed"),
    ],
)
def test_bad_input_gets_its_4xx_in_one_shape(server, method, path, body, status, error_type):
    if isinstance(body, bytes):
        r = server.client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        r = server.client.request(method, path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"type", "message", "request_id"}
    assert error["type"] == error_type and error["message"]
    assert error["request_id"] == r.headers["x-request-id"]


def test_truncate_cuts_a_long_input_instead_of_refusing(server):
    r = server.client.post("/v1/summarize", json={"text": "hello world " * 100, "truncate": True, "max_new_tokens": 3})
    assert r.status_code == 200
    assert r.json()["summaries"][0]["input_tokens"] == 128


def test_models_health_and_docs(server):
    models = server.client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["brief", "tiny", "tiny-en"]
    tiny = server.client.get("/v1/models/tiny").json()
    assert tiny["task"] == "translate" and tiny["architecture"] == "heed" and tiny["ready"] is True
    assert tiny["attention"]["decoder"]["kind"] == "causal"
    assert tiny["limits"]["max_input_tokens"] == 8192 and tiny["limits"]["max_output_tokens"] == 8000
    assert tiny["languages"]["target"] == ["de", "es", "fr"]
    assert server.client.get("/healthz").status_code == 200
    assert server.client.get("/readyz").json()["status"] == "ready"
    assert server.client.get("/docs").status_code == 200
    assert "/v1/translate" in server.client.get("/openapi.json").json()["paths"]
    text = server.client.get("/metrics").text
    assert 'heed_model_info{architecture="heed",model="tiny",quantization="none",task="translate"} 1.0' in text
    assert "heed_ready 1.0" in text and "process_cpu_seconds_total" in text


def test_a_short_request_overtakes_long_ones(server):
    results = [{}, {}]
    started = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=long_stream, args=(server, r, e)) for r, e in zip(results, started)]
    for t in threads:
        t.start()
    try:
        assert all(e.wait(30) for e in started), results
        r = server.client.post("/v1/translate", json={"text": "hello", "max_new_tokens": 3, "min_new_tokens": 3})
        finished = time.monotonic()
        assert r.status_code == 200 and r.json()["translations"][0]["output_tokens"] == 3
        assert all("ended" not in result for result in results), "a long request ended before the short one"
    finally:
        for result in results:
            result["stop"] = True
        for t in threads:
            t.join(30)
    assert all(result.get("ended", finished + 1) > finished for result in results)
    server.wait_for("heed_kv_slots_used", 0, model="tiny")


def test_a_disconnected_stream_frees_its_rows(server):
    tokens_before = server.sample("heed_output_tokens_total", model="tiny")
    result, started = {}, threading.Event()
    thread = threading.Thread(target=long_stream, args=(server, result, started))
    thread.start()
    try:
        assert started.wait(30), result
        server.wait_for("heed_kv_slots_used", 1, model="tiny", timeout=5)  # set after the step that sent the event
    finally:
        result["stop"] = True
        thread.join(30)
    assert "ended" not in result
    server.wait_for("heed_kv_slots_used", 0, model="tiny", timeout=5)
    generated = server.sample("heed_output_tokens_total", model="tiny") - tokens_before
    assert 0 < generated < LONG_TOKENS, "the request was not cancelled when its client went away"


def test_metrics_carry_resident_memory_and_the_kv_caches_bytes(server):
    """The process collector's resident set (the dashboard's memory panel) is plausible for a
    Python process with ONNX Runtime loaded, and a running request's KV cache shows in
    heed_kv_cache_bytes until its batch empties (the cache then drops its buffers)."""
    assert server.sample("process_resident_memory_bytes") > 10 * 2**20
    server.wait_for("heed_kv_cache_bytes", 0, model="tiny", timeout=5)
    result, started = {}, threading.Event()
    thread = threading.Thread(target=long_stream, args=(server, result, started))
    thread.start()
    try:
        assert started.wait(30), result
        end = time.monotonic() + 5  # the gauge is set after the step that sent the event
        while server.sample("heed_kv_cache_bytes", model="tiny") == 0 and time.monotonic() < end:
            time.sleep(0.05)
        assert server.sample("heed_kv_cache_bytes", model="tiny") > 0
        assert server.sample("heed_kv_cache_bytes", model="brief") == 0
    finally:
        result["stop"] = True
        thread.join(30)
    server.wait_for("heed_kv_cache_bytes", 0, model="tiny", timeout=5)


def test_a_client_that_gives_up_waiting_cancels_its_request(server):
    tokens_before = server.sample("heed_output_tokens_total", model="tiny")
    body = {"text": "hello", "min_new_tokens": LONG_TOKENS, "max_new_tokens": LONG_TOKENS}
    with httpx.Client(base_url=server.url, timeout=1) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/v1/translate", json=body)
    server.wait_for("heed_kv_slots_used", 0, model="tiny", timeout=5)
    assert 0 < server.sample("heed_output_tokens_total", model="tiny") - tokens_before < LONG_TOKENS
    server.wait_for("heed_requests_total", 1, model="tiny", route="/v1/translate", status="499", timeout=5)


def test_an_idle_connection_stays_open_longer_than_clients_keep_theirs(server):
    """httpx keeps idle connections 5 s, nginx 60 s; a server that closes first (uvicorn's default
    is 5 s) races them: a request sent as the server closes fails with a transport error."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b'{"status":"ok"}'
        first = conn.sock
        time.sleep(6)
        conn.request("GET", "/healthz")  # on the same connection: closed by the server, this raises
        assert conn.getresponse().status == 200 and conn.sock is first
    finally:
        conn.close()
