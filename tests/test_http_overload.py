"""Overload and deadlines against a real `heed serve` with one KV row and a one-request queue:
a request waiting too long gets 504, a full queue gets 503 with Retry-After, a request whose
deadline passes while decoding gets 504 and frees its row, and the metrics count each answer."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.http_server import LONG_TOKENS, long_stream, offline, running, sse_events


@pytest.fixture(scope="module")
def server(http_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "overload.log"
    env = {"HEED_KV_ROWS": "1", "HEED_QUEUE_SIZE": "1", "HEED_MAX_NEW_TOKENS": "8000", "HEED_RETRY_AFTER": "2"}
    with running(http_repo, log, **env) as s:
        yield s


def translate_count(server, status: str) -> float:
    return server.sample("heed_requests_total", model="tiny", route="/v1/translate", status=status)


def test_queue_full_gets_503_and_a_queued_request_past_its_deadline_504(server):
    result, started = {}, threading.Event()
    holder = threading.Thread(target=long_stream, args=(server, result, started))
    holder.start()
    try:
        assert started.wait(30), result
        assert server.sample("heed_kv_slots_used", model="tiny") == 1

        late = server.client.post("/v1/translate", json={"text": "hello", "timeout": 0.5})
        assert late.status_code == 504, late.text
        assert late.json()["error"]["type"] == "deadline_exceeded"
        server.wait_for("heed_queue_depth", 0, model="tiny", timeout=5)

        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(server.client.post, "/v1/translate", json={"text": "hello", "max_new_tokens": 3})
            server.wait_for("heed_queue_depth", 1, model="tiny", timeout=10)
            refused = server.client.post("/v1/translate", json={"text": "hello"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "2"
            assert refused.json()["error"]["type"] == "overloaded"
            # the same refusal through the translation clients' protocols, in their shapes and statuses
            deepl = server.client.post("/v2/translate", data={"text": "hello", "target_lang": "DE"})
            assert deepl.status_code == 429 and deepl.headers["retry-after"] == "2", deepl.text
            assert "waiting; retry later" in deepl.json()["message"]
            libre = server.client.post("/translate", json={"q": "hello", "source": "en", "target": "de"})
            assert libre.status_code == 503 and libre.headers["retry-after"] == "2", libre.text
            assert "waiting; retry later" in libre.json()["error"]
            result["stop"] = True  # the long stream's client hangs up: its row goes to the queued request
            answered = queued.result(timeout=30)
        assert answered.status_code == 200, answered.text
        assert answered.json()["translations"][0]["output_tokens"] == 3
    finally:
        result["stop"] = True
        holder.join(30)
    assert "ended" not in result
    server.wait_for("heed_kv_slots_used", 0, model="tiny", timeout=5)
    assert [translate_count(server, s) for s in ("200", "503", "504")] == [1, 1, 1]


def test_deadline_while_decoding_gets_504_and_frees_the_row(server):
    tokens_before = server.sample("heed_output_tokens_total", model="tiny")
    body = {"text": "hello", "min_new_tokens": LONG_TOKENS, "max_new_tokens": LONG_TOKENS, "timeout": 1}
    r = server.client.post("/v1/translate", json=body)
    assert r.status_code == 504, r.text
    assert r.json()["error"]["type"] == "deadline_exceeded"
    server.wait_for("heed_kv_slots_used", 0, model="tiny", timeout=5)
    assert 0 < server.sample("heed_output_tokens_total", model="tiny") - tokens_before < LONG_TOKENS


def test_a_stream_past_its_deadline_ends_with_an_error_event(server):
    body = {"model": "tiny", "input": "hello", "min_new_tokens": LONG_TOKENS, "max_new_tokens": LONG_TOKENS}
    with server.client.stream("POST", "/v1/generate", json=body | {"stream": True, "timeout": 0.5}) as r:
        events = list(sse_events(r))
    assert len(events) > 1 and all(name == "message" and "token" in data for name, data in events[:-1])
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == "deadline_exceeded"
    server.wait_for("heed_kv_slots_used", 0, model="tiny", timeout=5)


def test_a_list_longer_than_the_kv_rows_is_decoded_in_turns_and_in_order(server, http_repo):
    texts = ["hello world", "the lazy dog", "one two three"]
    expected = offline(http_repo / "tiny", texts)
    r = server.client.post("/v1/translate", json={"text": texts})
    assert r.status_code == 200, r.text
    assert [t["text"] for t in r.json()["translations"]] == [e["text"] for e in expected]
