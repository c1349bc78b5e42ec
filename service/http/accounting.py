"""The accounting middleware, outermost but for CORS: every HTTP request's id, status and time.

- the request id: the client's `X-Request-ID` when it is a short token of safe characters, else
  a new one; returned in the response headers, kept in `request.state.request_id` (error bodies
  carry it) and in a context variable that `RequestIdFilter` puts into every log line;
- the access line (method, path, status, duration, id; never the request's text);
- `heed_requests_total` and `heed_request_duration_seconds` per model and route for the API
  routes (`/v1/...` and the other protocols' `api_paths`), when the response, streamed ones
  included, has been sent completely;
- the count of API requests in flight, which the graceful shutdown waits for.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics
from service.tracing import RequestTracer

log = logging.getLogger("heed.access")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("heed_request_id", default="-")
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # safe to echo in headers and logs


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (`-` outside a request, e.g. on worker threads)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID if it is acceptable, else a new random one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if REQUEST_ID_PATTERN.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class InFlight:
    """API requests whose response has not been sent completely."""

    def __init__(self) -> None:
        self.count = 0


class Accounting:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        in_flight: InFlight,
        api_paths: frozenset[str] = frozenset(),
        tracer: RequestTracer | None = None,  # service/tracing.py: a span per request, when tracing is on
    ):
        self.app, self.metrics, self.in_flight, self.api_paths = app, metrics, in_flight, api_paths
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = rid
        # Each request runs in its own task (its own context), so the id is not reset afterwards:
        # Starlette's outermost 500 handler runs after this middleware returns and still logs it.
        REQUEST_ID.set(rid)
        trace = self.tracer.begin(scope, rid) if self.tracer else None
        start, status = time.perf_counter(), 500
        api = scope["path"].startswith("/v1/") or scope["path"] in self.api_paths

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):  # error bodies set it already
                    message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        self.in_flight.count += api
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.in_flight.count -= api
            took = time.perf_counter() - start
            route, model = scope.get("route"), scope["state"].get("model", "")
            fields = {"route": getattr(route, "path", None), "status": status, "model": model or None}
            fields |= {"method": scope["method"], "path": scope["path"], "duration_ms": round(took * 1000, 1)}
            log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, took * 1000, extra=fields)
            if trace is not None:
                self.tracer.end(trace, status, fields["route"], model)
            if api and route is not None:
                self.metrics.requests.labels(model, route.path, str(status)).inc()
                self.metrics.request_duration.labels(model, route.path).observe(took)
