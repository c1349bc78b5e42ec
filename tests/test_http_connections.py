"""Connection floods against a real `heed serve` (service/http/connections.py, the guard), with the
cap and the read timeout set low: half-open connections (half a request line, then nothing) are
answered 408 and closed within the timeout while real requests are answered; past the cap a
request gets 503 in its protocol's shape, past twice the cap a connection is closed at once; a
body that stops half way gets 408; requests that take longer than the timeout to answer are not
cut."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.http_server import running

CAP = 20
TIMEOUT = 2.0  # HEED_READ_TIMEOUT
SLACK = 1.5  # the event loop's timer and a loaded 2-core machine


@pytest.fixture(scope="module")
def server(http_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "connections.log"
    env = {"HEED_MAX_CONNECTIONS": str(CAP), "HEED_READ_TIMEOUT": str(TIMEOUT), "HEED_MAX_NEW_TOKENS": "8000"}
    with running(http_repo, log, **env) as s:
        s.client.close()  # no idle kept-alive connection of the fixture's own in the counts below
        yield s


def half_open(server, data: bytes = b"POST /v1/translate HT") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT + 10)
    sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server writes until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def answer(raw: bytes) -> tuple[int, dict, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def closed_within_the_timeout(sockets: list[socket.socket], opened: float) -> None:
    """Each gets 408 in heed's error shape and is closed, within the timeout (plus slack)."""
    for sock in sockets:
        status, headers, body = answer(read_all(sock))
        took = time.monotonic() - opened
        assert status == 408 and headers["connection"] == "close", (status, headers)
        assert body["error"]["type"] == "request_timeout", body
        assert TIMEOUT - 0.2 < took < TIMEOUT + SLACK, took
        sock.close()


def test_half_open_connections_are_closed_in_time_and_real_requests_answered(server):
    opened = time.monotonic()
    flood = [half_open(server) for _ in range(CAP - 5)]
    flood += [half_open(server, b"")]  # connected, and not a byte sent
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/translate", json={"text": "hello", "max_new_tokens": 4})
        assert r.status_code == 200, r.text
    closed_within_the_timeout(flood, opened)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/translate", json={"text": "again", "max_new_tokens": 4}).status_code == 200


def test_over_the_cap_requests_get_503_in_their_protocols_shape_and_past_twice_it_connections_close(server):
    opened = time.monotonic()
    flood = [half_open(server) for _ in range(CAP + 5)]
    over = [
        ("/v1/translate", {"text": "hello"}, 503, lambda body: body["error"]["type"] == "overloaded"),
        ("/translate", {"q": "hello", "source": "en", "target": "de"}, 503, lambda body: set(body) == {"error"}),
        ("/v2/translate", {"text": ["hello"], "target_lang": "DE"}, 429, lambda body: set(body) == {"message"}),
    ]
    for path, fields, status, shaped in over:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post(path, json=fields)
            assert r.status_code == status and shaped(r.json()), r.text
            assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
    with httpx.Client(base_url=server.url, timeout=30) as client:  # probes and metrics stay answered
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    beyond = [half_open(server) for _ in range(CAP)]  # 2 * CAP + 5 open: the last ones are closed at once
    time.sleep(0.5)
    shut = []
    for sock in beyond:
        sock.setblocking(False)
        try:
            shut.append(sock.recv(1) == b"")
        except BlockingIOError:  # still open, waiting
            shut.append(False)
        except ConnectionResetError:
            shut.append(True)
        sock.setblocking(True)
    assert 3 <= sum(shut) <= 5 and not any(shut[: CAP - 6]), shut
    closed_within_the_timeout(flood + [s for s, gone in zip(beyond, shut) if not gone], opened)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/translate", json={"text": "hello", "max_new_tokens": 4}).status_code == 200


@pytest.mark.parametrize(
    ("path", "status", "shaped"),
    [
        ("/v1/translate", 408, lambda body: body["error"]["type"] == "request_timeout"),
        ("/translate", 400, lambda body: set(body) == {"error"}),  # LibreTranslate's: any 4xx but 403 and 429
        ("/v2/translate", 408, lambda body: set(body) == {"message"}),
    ],
)
def test_a_body_that_stops_half_way_gets_408_in_its_protocols_shape(server, path, status, shaped):
    sent = f"POST {path} HTTP/1.1\r\nHost: heed\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    start = time.monotonic()
    sock = half_open(server, sent.encode() + b'{"text": "he')
    code, headers, body = answer(read_all(sock))
    assert code == status and shaped(body) and headers["connection"] == "close", (code, headers, body)
    assert "did not arrive within 2 s" in json.dumps(body)
    assert TIMEOUT - 0.2 < time.monotonic() - start < TIMEOUT + SLACK
    sock.close()


def test_the_next_request_on_a_kept_alive_connection_has_the_same_bound(server):
    sock = half_open(server, b"GET /healthz HTTP/1.1\r\nHost: heed\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    time.sleep(TIMEOUT + 0.5)  # idle between requests: HEED_KEEP_ALIVE's, not this bound
    start = time.monotonic()
    sock.sendall(b"GET /heal")
    status, _, body = answer(read_all(sock))
    assert status == 408 and TIMEOUT - 0.2 < time.monotonic() - start < TIMEOUT + SLACK, body
    sock.close()


def stream(server, tokens: int) -> tuple[float, dict]:
    """Decode `tokens` tokens, streamed: the seconds it took, and the final event."""
    body = {"model": "tiny", "input": "hello", "min_new_tokens": tokens, "max_new_tokens": tokens, "stream": True}
    start = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=60) as client, client.stream("POST", "/v1/generate", json=body) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    return time.monotonic() - start, json.loads(lines[-1][len("data: ") :])


def test_answers_that_take_longer_than_the_timeout_are_not_cut(server):
    took, _ = stream(server, 200)  # this machine's pace, so that the next one lasts about 2.5 timeouts
    tokens = min(8000, int(200 * 2.5 * TIMEOUT / took))
    took, final = stream(server, tokens)
    assert final["done"] and final["output_tokens"] == tokens
    assert took > TIMEOUT, f"{tokens} tokens in {took:.1f} s: too fast to show anything"
