"""Connection floods against a real `heed serve` (service/http/connections.py, the guard), with the
cap and the read timeout set low: half-open connections (half a request line, then nothing) are
answered 408 and closed within the timeout while real requests are answered; past the cap the
connections that have waited longest are closed to make room, so that real requests are still
answered, and only when every connection has a request under way does a request get 503 in its
protocol's shape; a body that stops half way gets 408; requests that take longer than the timeout
to answer are not cut."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from service.http.connections import Connections
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


class Fake:
    """A connection as `Connections` sees it: it only remembers being closed."""

    def __init__(self) -> None:
        self.closed = False

    def close_idle(self) -> None:
        self.closed = True


def test_a_connection_over_the_cap_closes_the_one_that_has_waited_longest():
    connections = Connections(cap=3)
    first, second, third = Fake(), Fake(), Fake()
    for c in (first, second, third):
        assert connections.opened(c) is None
    connections.busy(first)  # its request's headers are in: never closed to make room
    fourth = Fake()
    assert connections.opened(fourth) is second  # the oldest still waiting
    connections.closed(second)
    connections.idle(first)  # answered and kept alive: it waits again, now the newest but one
    fifth = Fake()
    assert connections.opened(fifth) is third
    connections.closed(third)
    assert connections.opened(Fake()) is fourth and connections.open == 4  # counted until it is lost


def test_with_every_other_connection_busy_there_is_nothing_to_close():
    connections = Connections(cap=2)
    busy = [Fake(), Fake()]
    for c in busy:
        connections.opened(c)
        connections.busy(c)
    newest = Fake()
    assert connections.opened(newest) is None and connections.over_cap  # the guard answers its request 503
    for _ in range(2):
        connections.opened(Fake())
    assert connections.open > connections.hard_limit - 1


def test_a_flood_of_half_open_connections_past_the_cap_makes_room_for_real_requests(server):
    opened = time.monotonic()
    flood = [half_open(server) for _ in range(CAP + 5)]
    time.sleep(0.5)
    early = [s for s in flood if gone(s)]
    assert early == flood[:5], [flood.index(s) for s in early]  # the oldest
    real = [
        ("/v1/translate", {"text": "hello", "max_new_tokens": 4}),
        ("/translate", {"q": "hello", "source": "en", "target": "de"}),
        ("/v2/translate", {"text": ["hello"], "target_lang": "DE"}),
    ]
    for path, fields in real:  # the first one's connection closes the oldest half-open one
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post(path, json=fields)
            assert r.status_code == 200, (path, r.text)
    waiting = [s for s in flood if not gone(s)]
    assert waiting == flood[6:]
    closed_within_the_timeout(waiting, opened)
    for s in flood:
        s.close()


def gone(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (without an answer: closed to make room)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:  # still open, waiting
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_with_every_connection_busy_a_request_gets_503_in_its_protocols_shape(server):
    opened = time.monotonic()
    head = "POST /v1/translate HTTP/1.1\r\nHost: heed\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    busy = []
    for _ in range(CAP):  # headers in, body late; a pause each, so that the server has read them
        busy.append(half_open(server, head.encode() + b'{"text": "he'))  # before the next one connects
        time.sleep(0.05)
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
    for sock in busy:  # the guard's bound on the body
        status, _, body = answer(read_all(sock))
        assert status == 408 and "did not arrive within" in body["error"]["message"], body
        assert time.monotonic() - opened < TIMEOUT + SLACK + CAP * 0.05
        sock.close()
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
