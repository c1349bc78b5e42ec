"""Graceful shutdown of a real `heed serve`: on SIGTERM readiness turns false, new requests get
503, every admitted request (streamed or not, running or still queued for rows) still completes,
and the process exits 0; past the grace period the requests left are answered 503 rather than
dropped."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.http_server import ROOT, Server, sse_events

TOKENS = 2000
QUEUED, QUEUED_TOKENS = 6, 50  # requests queued behind the running ones at SIGTERM


def decode(server: Server, tokens: int = TOKENS) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        return c.post("/v1/translate", json={"text": "hello", "min_new_tokens": tokens, "max_new_tokens": tokens})


def stream(server: Server) -> list[tuple[str, dict]]:
    body = {"model": "tiny", "input": "hello", "min_new_tokens": TOKENS, "max_new_tokens": TOKENS, "stream": True}
    with httpx.Client(base_url=server.url, timeout=120) as c, c.stream("POST", "/v1/generate", json=body) as r:
        return list(sse_events(r))


def wait_until(condition, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_sigterm_drains_in_flight_requests_and_exits_0(http_repo, tmp_path):
    env = {"HEED_MAX_NEW_TOKENS": "8000", "HEED_SHUTDOWN_GRACE": "120", "HEED_KV_ROWS": "4"}
    server = Server(http_repo, tmp_path / "serve.log", **env)
    try:
        server.wait_ready()
        with ThreadPoolExecutor(4 + QUEUED) as pool:
            answers = [pool.submit(decode, server) for _ in range(3)]
            streamed = pool.submit(stream, server)
            server.wait_for("heed_kv_slots_used", 4, model="tiny")
            # admitted but still waiting for rows when the signal comes: these must be answered too
            answers += [pool.submit(decode, server, QUEUED_TOKENS) for _ in range(QUEUED)]
            server.wait_for("heed_queue_depth", QUEUED, model="tiny")
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: server.client.get("/readyz").status_code == 503)
            assert server.client.get("/readyz").json()["status"] == "draining"
            refused = server.client.post("/v1/translate", json={"text": "hello"})
            assert refused.status_code == 503 and refused.json()["error"]["type"] == "overloaded"
            assert "retry-after" in refused.headers
            assert not any(a.done() for a in answers), "in-flight requests ended before the refusal was tested"
            responses = [a.result(timeout=120) for a in answers]
            events = streamed.result(timeout=120)
        assert [r.status_code for r in responses] == [200] * (3 + QUEUED)
        tokens = [r.json()["translations"][0]["output_tokens"] for r in responses]
        assert tokens == [TOKENS] * 3 + [QUEUED_TOKENS] * QUEUED
        name, final = events[-1]
        assert name == "message" and final["done"] and final["output_tokens"] == TOKENS
        assert len(events) == TOKENS + 1
        assert server.process.wait(60) == 0
    finally:
        server.stop()


def test_past_the_grace_period_requests_get_503_and_the_process_exits_0(http_repo, tmp_path):
    server = Server(http_repo, tmp_path / "serve.log", HEED_MAX_NEW_TOKENS="8000", HEED_SHUTDOWN_GRACE="0.5")
    try:
        server.wait_ready()
        result: dict = {}
        client = threading.Thread(target=lambda: result.update(response=decode(server, 6000)))
        client.start()
        server.wait_for("heed_kv_slots_used", 1, model="tiny")
        server.process.send_signal(signal.SIGTERM)
        client.join(60)
        response = result["response"]
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "overloaded"
        assert server.process.wait(60) == 0
    finally:
        server.stop()


def test_a_repository_without_models_is_refused_at_start(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--model-repo", str(tmp_path), "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "no model directories" in run.stderr
