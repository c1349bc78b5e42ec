"""The HTTP service's guard: request ids, optional API keys and the request body limit.

`Guard` is an ASGI middleware in front of the routes. For every HTTP request it

- takes the client's `X-Request-ID` (when it is a short token of safe characters) or makes one,
  returns it in the response headers, keeps it in `request.state.request_id` (error bodies carry
  it) and in a context variable that `RequestIdFilter` puts into every log line of the request;
- when API keys are configured (`HEED_API_KEYS`), refuses requests without a matching
  `Authorization: Bearer <key>` with 401, comparing in constant time against every key so that
  timing tells nothing about which key or how much of it matched. Probes and metrics
  (`OPEN_PATHS`) stay open: orchestrators and Prometheus carry no keys; so do the translation
  page's static files, which hold no data (the page asks for a key and sends it with its calls);
- refuses bodies over `HEED_MAX_BODY_BYTES` with 413 before any of it is parsed (by the declared
  Content-Length, else while reading), so that a huge body costs neither memory nor JSON parsing.

Request text is never logged: the access line has method, path, status, duration and the id.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import logging
import re
import time
import uuid
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.page import PAGE

log = logging.getLogger("heed.access")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("heed_request_id", default="-")
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", *PAGE})
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # safe to echo in headers and logs


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (`-` outside a request, e.g. on scheduler threads)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def parse_list(value: str | None) -> list[str]:
    """A comma-separated setting as a list, blanks dropped."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID if it is acceptable, else a new random one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if REQUEST_ID_PATTERN.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


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
        rid = request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = rid
        # Each request runs in its own task (its own context), so the id is not reset afterwards:
        # Starlette's outermost 500 handler runs after this middleware returns and still logs it.
        REQUEST_ID.set(rid)
        start, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):  # error bodies set it already
                    message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            if (
                self.keys
                and scope["path"] not in OPEN_PATHS
                and not authorized(header(scope, b"authorization"), self.keys)
            ):
                await reject(
                    send_with_id, 401, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)", rid
                )
                return
            body = await self.read_body(scope, receive)
            if body is None:
                await reject(
                    send_with_id, 413, "body_too_large", f"the request body is over {self.max_body_bytes} bytes", rid
                )
                return
            pending = deque(body)

            async def replay() -> Message:
                return pending.popleft() if pending else await receive()

            await self.app(scope, replay, send_with_id)
        finally:
            took = (time.perf_counter() - start) * 1000
            log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, took)

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
    """An error answer in heed's one shape, from outside the app."""
    body = json.dumps({"error": {"type": type_, "message": message, "request_id": rid}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
