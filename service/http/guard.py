"""The guard in front of the routes: optional API keys and the request body limit.

- When API keys are configured (`HEED_API_KEYS`), requests without a matching
  `Authorization: Bearer <key>` get 401; the comparison is constant-time against every key, so
  timing tells nothing about which key or how much of it matched. Probes and metrics
  (`OPEN_PATHS`) stay open: orchestrators and Prometheus carry no keys; so do the translation
  page's static files, which hold no data (the page asks for a key and sends it with its calls).
- Bodies over `HEED_MAX_BODY_BYTES` get 413 before any of it is parsed (by the declared
  Content-Length, else while reading), so that a huge body costs neither memory nor JSON parsing.
"""

from __future__ import annotations

import hmac
import json
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import error_body
from service.http.page import PAGE

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", *PAGE})


def authorized(authorization: bytes | None, keys: list[bytes]) -> bool:
    """Whether an Authorization header carries one of the keys (constant time per key, every key tried)."""
    if authorization is None:
        return False
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return scheme.lower() == b"bearer" and matched


def header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


class Guard:
    """See the module docstring. `keys` empty = no authentication."""

    def __init__(self, app: ASGIApp, keys: list[str], max_body_bytes: int):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope["state"]["request_id"]
        if self.keys and scope["path"] not in OPEN_PATHS and not authorized(header(scope, b"authorization"), self.keys):
            await reject(send, 401, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)", rid)
            return
        body = await self.read_body(scope, receive)
        if body is None:
            await reject(send, 413, "body_too_large", f"the request body is over {self.max_body_bytes} bytes", rid)
            return
        pending = deque(body)

        async def replay() -> Message:
            return pending.popleft() if pending else await receive()

        await self.app(scope, replay, send)

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


async def reject(send: Send, status: int, type_: str, message: str, rid: str) -> None:
    """An error answer from outside the app, in the one error shape."""
    body = json.dumps(error_body(type_, message, rid)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
