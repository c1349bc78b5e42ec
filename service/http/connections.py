"""Bounds on client connections, so that a flood of them cannot exhaust the process.

uvicorn (with httptools, heed's parser) bounds no part of a request's arrival: a connection that
sends half a request line and then nothing stays open as long as its client likes (its
`timeout_keep_alive` runs only between requests), and its `limit_concurrency` answers 503 only
once the headers are complete, in plain text. So `heed serve` runs uvicorn with this protocol:

- a request's headers must arrive within `HEED_READ_TIMEOUT` seconds of the connection's opening
  (on a kept-alive connection: of the request's first byte); else the connection gets 408 in
  heed's error shape and is closed. The body's bound is the guard's (service/http/guard.py),
  which knows the path and so the protocol's error shape;
- `Connections` counts the open connections and knows which of them wait for a request's headers
  (new ones, and kept-alive ones between requests). A connection that takes the count over
  `HEED_MAX_CONNECTIONS` makes room by closing the connection that has waited longest (as a
  proxy drops its oldest idle upstream connection): a flood of half-open connections then churns
  through itself, and a real client, whose headers follow its connection at once, is served.
  Only when every other connection has a request under way is there nothing to close: the
  guard then answers the request 503 + Retry-After in its protocol's shape and closes the
  connection. Past twice the cap (a burst faster than closed connections are reaped), a new
  connection is closed at once, unanswered: the bound on the file descriptors a flood can take.

What a proxy in front does better (per-client connection and request rates, slow bodies
buffered before they reach heed) is in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
from typing import Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http.errors import error_body


class Idle(Protocol):
    def close_idle(self) -> None:
        """Close a connection that has no request under way."""


class Connections:
    """The client connections open now (counted by `protocol`'s class, read by the guard), and
    the ones waiting for a request's headers, oldest first."""

    def __init__(self, cap: int):
        self.cap, self.open = cap, 0
        self._waiting: dict[Idle, None] = {}  # insertion-ordered: the first has waited longest

    def opened(self, connection: Idle) -> Idle | None:
        """Count a new connection; the waiting connection to close to make room for it, if any."""
        self.open += 1
        self._waiting[connection] = None
        if self.open <= self.cap:
            return None
        oldest = next(iter(self._waiting))
        if oldest is connection:  # every other connection has a request under way
            return None
        del self._waiting[oldest]  # it is closing: never chosen twice
        return oldest

    def busy(self, connection: Idle) -> None:
        """Its request's headers are in: it is not closed to make room until its answer is out."""
        self._waiting.pop(connection, None)

    def idle(self, connection: Idle) -> None:
        """Kept alive after an answer: it waits for the next request."""
        self._waiting[connection] = None

    def closed(self, connection: Idle) -> None:
        self.open -= 1
        self._waiting.pop(connection, None)

    @property
    def over_cap(self) -> bool:
        return self.open > self.cap

    @property
    def hard_limit(self) -> int:
        return 2 * self.cap


def timeout_response(seconds: float) -> bytes:
    """408 for headers that did not arrive in time: no path yet, so heed's own error shape."""
    message = f"the request's headers did not arrive within {seconds:g} s of its start"
    body = json.dumps(error_body("request_timeout", message, None)).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def protocol(connections: Connections, read_timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, counting its connections and bounding each request's headers."""
    expired = timeout_response(read_timeout)

    class BoundedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            oldest = connections.opened(self)
            if connections.open > connections.hard_limit:
                transport.abort()  # connection_lost follows, and uncounts it
                return
            if oldest is not None:
                oldest.close_idle()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            connections.closed(self)
            super().connection_lost(exc)

        def close_idle(self) -> None:
            self._disarm()
            self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a request on a kept-alive connection: its clock starts now
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            connections.busy(self)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # its next request's headers are in already
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                connections.idle(self)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(read_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False  # an earlier request's answer is being written: close after it
                return
            self.transport.write(expired)
            self.transport.close()

    return BoundedProtocol
