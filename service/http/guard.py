"""The guard in front of the routes: the connection cap, API keys and their limits, and the
request body's size and time. Whatever it refuses is answered in the path's protocol's error
shape (service/http/errors.py), before any route runs.

- While more than `HEED_MAX_CONNECTIONS` connections are open (service/http/connections.py), a
  request gets 503 + Retry-After and its connection is closed; probes and metrics are exempt, so
  that an orchestrator does not restart, and Prometheus does not lose sight of, a busy server.
- When API keys are configured (`HEED_API_KEYS`, `HEED_API_KEYS_FILE`), requests without a
  matching `Authorization: Bearer <key>` (or `DeepL-Auth-Key <key>`, the scheme DeepL's clients
  send) get 401 (on the paths of a protocol whose clients send the key as an `api_key` field, in
  the body or the query string, that field counts too). The comparison is constant-time against
  every key, so timing tells nothing about which key or how much matched.
  Probes and metrics (`OPEN_PATHS`) stay open: orchestrators and Prometheus carry no keys; so do
  the translation page's static files, which hold no data (the page asks for a key and sends it),
  and the paths a protocol keeps open (LibreTranslate's `/languages`).
- A key over its requests per minute gets 429 + Retry-After (service/http/quotas.py); the key's
  account is the request's character `Allowance`, charged by validation and refunded here when
  the answer is an error. Without keys, one account counts everybody's characters, unlimited.
- Bodies over `HEED_MAX_BODY_BYTES` get 413 before any of it is parsed (by the declared
  Content-Length, else while reading), so that a huge body costs neither memory nor JSON parsing;
  a body not all there within `HEED_READ_TIMEOUT` seconds gets 408 and its connection is closed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import deque
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import RateLimited
from service.http.connections import Connections
from service.http.errors import ErrorStyles
from service.http.page import PAGE
from service.http.quotas import Account, Charge, KeyRing
from service.validation import ALLOWANCE

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", *PAGE})
UNCAPPED = frozenset({"/healthz", "/readyz", "/metrics"})  # answered whatever the connections
SCHEMES = frozenset({b"bearer", b"deepl-auth-key"})  # DeepL's clients send `DeepL-Auth-Key <key>`
UNAUTHORIZED = "a valid API key is required (Authorization: Bearer <key>, or DeepL-Auth-Key <key>)"


def key_index(authorization: bytes | None, keys: list[bytes]) -> int | None:
    """Which of `keys` an Authorization header carries in one of the `SCHEMES`, compared in
    constant time with every key whatever the scheme: timing tells nothing."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    found = None
    for i, key in enumerate(keys):
        if hmac.compare_digest(token, key):
            found = i
    return found if scheme.lower() in SCHEMES else None


def authorized(authorization: bytes | None, keys: list[bytes]) -> bool:
    return key_index(authorization, keys) is not None


def header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


def api_key_field(scope: Scope, body: list[Message]) -> bytes | None:
    """The `api_key` of the query string, or of a JSON or form-encoded body."""
    fields = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    raw = b"".join(m.get("body", b"") for m in body)
    content_type = (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
    try:
        if content_type == b"application/json":
            data = json.loads(raw)
            if isinstance(data, dict) and isinstance(data.get("api_key"), str):
                return data["api_key"].encode("utf-8", "surrogatepass")  # a lone surrogate matches no key
        elif content_type == b"application/x-www-form-urlencoded":
            fields = parse_qs(raw.decode()) | fields
    except ValueError:  # not JSON or not UTF-8: no key in it; the route answers the bad body
        pass
    keys = fields.get("api_key")
    return keys[0].encode() if keys else None


class Refused(Exception):
    """A request the guard answers itself: status, heed's error type, message, extra headers."""

    def __init__(self, status: int, type_: str, message: str, headers: list[tuple[bytes, bytes]] = ()):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, list(headers)


class Guard:
    """See the module docstring. `ring` without keys = no authentication."""

    def __init__(
        self,
        app: ASGIApp,
        ring: KeyRing,
        max_body_bytes: int,
        styles: ErrorStyles,
        connections: Connections,
        read_timeout: float,
        retry_after: int,
        open_paths: frozenset[str] = frozenset(),
        key_field_paths: frozenset[str] = frozenset(),
    ):
        self.app, self.ring, self.styles, self.connections = app, ring, styles, connections
        self.max_body_bytes, self.read_timeout, self.retry_after = max_body_bytes, read_timeout, retry_after
        self.open_paths, self.key_field_paths = OPEN_PATHS | open_paths, key_field_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body, account = await self.admit(scope, receive)
        except Refused as refused:
            await self.reject(scope, send, refused)
            return
        scope["state"]["account"] = account  # DeepL's /v2/usage reports it
        charge = Charge(account)
        ALLOWANCE.set(charge)  # this request's task only: no other request sees it
        pending = deque(body)

        async def replay() -> Message:
            return pending.popleft() if pending else await receive()

        async def send_refunding(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                charge.refund()  # a failed request costs no characters
            await send(message)

        await self.app(scope, replay, send_refunding)

    async def admit(self, scope: Scope, receive: Receive) -> tuple[list[Message], Account]:
        """The request's body and account, or `Refused`."""
        path = scope["path"]
        if self.connections.over_cap and path not in UNCAPPED:
            message = f"more than {self.connections.cap} connections are open; retry later"
            raise Refused(503, "overloaded", message, [(b"retry-after", str(self.retry_after).encode())])
        index = key_index(header(scope, b"authorization"), self.ring.keys)
        needs_key = bool(self.ring.keys) and path not in self.open_paths and index is None
        if needs_key and path not in self.key_field_paths:  # refused before its body is read
            raise Refused(401, "unauthorized", UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
        if index is not None and path not in self.open_paths:
            self.count_request(index)  # before the body is read, too
        body = await self.read_body(scope, receive)
        if needs_key:
            key = api_key_field(scope, body)
            index = None if key is None else key_index(b"Bearer " + key, self.ring.keys)
            if index is None:
                raise Refused(401, "unauthorized", UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
            self.count_request(index)
        return body, self.ring.anonymous if index is None else self.ring.accounts[index]

    def count_request(self, index: int) -> None:
        try:
            self.ring.accounts[index].admit_request()
        except RateLimited as e:
            raise Refused(e.status, e.type, e.message, [(b"retry-after", str(e.retry_after).encode())]) from e

    async def reject(self, scope: Scope, send: Send, refused: Refused) -> None:
        """An error answer from outside the app, in the path's error style; the connection is
        closed after it when the request was not read (or must not be: too many connections)."""
        rid = scope["state"]["request_id"]
        status, payload = self.styles.build(scope["path"], refused.status, refused.type, refused.message, rid)
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if refused.status in (408, 413, 503):
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers + refused.headers})
        await send({"type": "http.response.body", "body": body})

    async def read_body(self, scope: Scope, receive: Receive) -> list[Message]:
        """The request's body messages; `Refused` when it is over the limit (declared or read) or
        late."""
        too_large = Refused(413, "body_too_large", f"the request body is over {self.max_body_bytes} bytes")
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise too_large
        messages, size, end = [], 0, time.monotonic() + self.read_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, end - time.monotonic()))
            except asyncio.TimeoutError:
                late = f"the request body did not arrive within {self.read_timeout:g} s"
                raise Refused(408, "request_timeout", late) from None
            messages.append(message)
            if message["type"] != "http.request":  # the client went away; the app will see it
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                raise too_large
            if not message.get("more_body", False):
                return messages
