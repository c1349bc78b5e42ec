"""The guard in front of the routes: optional API keys and the request body limit.

- When API keys are configured (`HEED_API_KEYS`), requests without a matching
  `Authorization: Bearer <key>` (or `DeepL-Auth-Key <key>`, the scheme DeepL's clients send) get
  401 (on the paths of a protocol whose clients send the key as an `api_key` field, in the body or
  the query string, that field counts too). The comparison is constant-time against every key,
  so timing tells nothing about which key or how much matched.
  Probes and metrics (`OPEN_PATHS`) stay open: orchestrators and Prometheus carry no keys; so do
  the translation page's static files, which hold no data (the page asks for a key and sends it),
  and the paths a protocol keeps open (LibreTranslate's `/languages`).
- Bodies over `HEED_MAX_BODY_BYTES` get 413 before any of it is parsed (by the declared
  Content-Length, else while reading), so that a huge body costs neither memory nor JSON parsing.
"""

from __future__ import annotations

import hmac
import json
from collections import deque
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import ErrorStyles
from service.http.page import PAGE

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", *PAGE})
SCHEMES = frozenset({b"bearer", b"deepl-auth-key"})  # DeepL's clients send `DeepL-Auth-Key <key>`


def authorized(authorization: bytes | None, keys: list[bytes]) -> bool:
    """Whether an Authorization header carries one of the keys in one of the `SCHEMES`, compared
    in constant time per key and against every key whatever the scheme: timing tells nothing."""
    if authorization is None:
        return False
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return scheme.lower() in SCHEMES and matched


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
                return data["api_key"].encode()
        elif content_type == b"application/x-www-form-urlencoded":
            fields = parse_qs(raw.decode()) | fields
    except ValueError:  # not JSON or not UTF-8: no key in it; the route answers the bad body
        pass
    keys = fields.get("api_key")
    return keys[0].encode() if keys else None


class Guard:
    """See the module docstring. `keys` empty = no authentication."""

    def __init__(
        self,
        app: ASGIApp,
        keys: list[str],
        max_body_bytes: int,
        styles: ErrorStyles,
        open_paths: frozenset[str] = frozenset(),
        key_field_paths: frozenset[str] = frozenset(),
    ):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.max_body_bytes, self.styles = max_body_bytes, styles
        self.open_paths, self.key_field_paths = OPEN_PATHS | open_paths, key_field_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, rid = scope["path"], scope["state"]["request_id"]
        unauthorized = "a valid API key is required (Authorization: Bearer <key>, or DeepL-Auth-Key <key>)"
        bearer = authorized(header(scope, b"authorization"), self.keys)
        needs_key = bool(self.keys) and path not in self.open_paths and not bearer
        if needs_key and path not in self.key_field_paths:  # refused before its body is read
            await self.reject(send, path, 401, "unauthorized", unauthorized, rid)
            return
        body = await self.read_body(scope, receive)
        if body is None:
            message = f"the request body is over {self.max_body_bytes} bytes"
            await self.reject(send, path, 413, "body_too_large", message, rid)
            return
        key = api_key_field(scope, body) if needs_key else None
        if needs_key and (key is None or not authorized(b"Bearer " + key, self.keys)):
            await self.reject(send, path, 401, "unauthorized", unauthorized, rid)
            return
        pending = deque(body)

        async def replay() -> Message:
            return pending.popleft() if pending else await receive()

        await self.app(scope, replay, send)

    async def reject(self, send: Send, path: str, status: int, type_: str, message: str, rid: str) -> None:
        """An error answer from outside the app, in the path's error style."""
        status, payload = self.styles.build(path, status, type_, message, rid)
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def read_body(self, scope: Scope, receive: Receive) -> list[Message] | None:
        """The request's body messages, or None when it is over the limit (declared or read)."""
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return None
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away; the app will see it
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return messages
