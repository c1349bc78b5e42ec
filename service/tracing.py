"""OpenTelemetry traces of heed's requests, optional (`pip install 'heed[tracing]'`).

On when `HEED_OTLP_ENDPOINT` is set, or one of the standard `OTEL_EXPORTER_OTLP_ENDPOINT` and
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the exporter then reads the `OTEL_*` variables it knows:
headers, timeout, `OTEL_SERVICE_NAME`, ...); `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
keep it off. Off, nothing of the SDK or the exporter is imported and no span is made.

Each HTTP request is one server span, the child of the caller's W3C `traceparent` when it sends
one, with its method, route, status, model and request id; never a request's text. Each request
a model's scheduler ran adds three child spans, made from the scheduler's own timestamps once the
response is sent, so that the worker thread does no tracing work, per step or per token:

- `heed.queue`: from arrival to the admission of its first sequence;
- `heed.prefill`: to its first token (the encoder pass, or a decoder-only prompt's prefill, and
  the first decoder step);
- `heed.decode`: to its end, with the tokens it produced as an attribute.
"""

from __future__ import annotations

import contextvars
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from service.scheduler import Request

OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACES_PATH = "/v1/traces"  # OTLP/HTTP's path under a collector's base URL


@dataclass
class Scheduled:
    model: str
    request: Request


@dataclass
class RequestTrace:
    """One HTTP request's span and the scheduler requests its route submitted."""

    span: Span
    scheduled: list[Scheduled] = field(default_factory=list)


_CURRENT: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar("heed_trace", default=None)


def note_scheduled(model: str, request: Request) -> None:
    """Called where a request is queued for a model (on the event loop, in the HTTP request's
    context): its phases become child spans of the HTTP request's span, if it is traced."""
    current = _CURRENT.get()
    if current is not None:
        current.scheduled.append(Scheduled(model, request))


def tracing_wanted(endpoint: str | None, environ: dict[str, str] | os._Environ = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or environ.get("OTEL_TRACES_EXPORTER") == "none":
        return False
    return bool(endpoint) or any(environ.get(name) for name in OTLP_ENDPOINT_VARIABLES)


def traces_url(endpoint: str) -> str:
    """The traces URL of `HEED_OTLP_ENDPOINT`: a collector's base URL, or already its traces URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def otlp_provider(endpoint: str | None) -> TracerProvider:
    """An SDK provider exporting in batches over OTLP/HTTP to `endpoint` (a collector's base URL),
    or where the `OTEL_EXPORTER_OTLP_*` variables say."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(endpoint=traces_url(endpoint)) if endpoint else OTLPSpanExporter()
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "heed"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class RequestTracer:
    def __init__(self, provider: TracerProvider):
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, StatusCode

        self._tracer: Tracer = provider.get_tracer("heed")
        self._extract, self._in_context = propagate.extract, trace.set_span_in_context
        self._server, self._error = SpanKind.SERVER, StatusCode.ERROR

    def begin(self, scope: dict[str, Any], request_id: str) -> RequestTrace:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"], "heed.request_id": request_id}
        span = self._tracer.start_span(
            scope["method"], context=self._extract(headers), kind=self._server, attributes=attributes
        )
        trace = RequestTrace(span)
        _CURRENT.set(trace)  # the request's own task: nothing else sees it
        return trace

    def end(self, trace: RequestTrace, status: int, route: str | None, model: str) -> None:
        span = trace.span
        if route is not None:
            span.update_name(f"{span.name} {route}")
            span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if model:
            span.set_attribute("heed.model", model)
        if status >= 500:
            span.set_status(self._error)
        parent = self._in_context(span)
        to_epoch = time.time_ns() - time.monotonic_ns()  # the scheduler's clock is time.monotonic
        for job in trace.scheduled:
            self._phases(parent, job, to_epoch)
        span.end()

    def _phases(self, parent: Context, job: Scheduled, to_epoch: int) -> None:
        request = job.request
        ended = request.ended_at if request.ended_at is not None else time.monotonic()
        common = {"heed.model": job.model, "heed.request_id": request.id, "heed.status": request.status.value}
        common["heed.sequences"] = len(request.sequences)
        admitted, first_token = request.admitted_at, request.first_token_at
        phases = [("heed.queue", request.arrival, ended if admitted is None else admitted, {})]
        if admitted is not None:
            phases.append(("heed.prefill", admitted, ended if first_token is None else first_token, {}))
        if first_token is not None:
            tokens = sum(s.result.output_tokens for s in request.sequences if s.result is not None)
            phases.append(("heed.decode", first_token, ended, {"heed.output_tokens": tokens}))
        for name, start, stop, attributes in phases:
            span = self._tracer.start_span(
                name, context=parent, start_time=to_epoch + int(start * 1e9), attributes=common | attributes
            )
            span.end(end_time=to_epoch + int(stop * 1e9))


def request_tracer(endpoint: str | None, provider: TracerProvider | None = None) -> RequestTracer | None:
    """The tracer of heed's requests, or None when tracing is off. `provider` replaces the OTLP
    one (the tests' in-memory exporter, or an application's own)."""
    if provider is None:
        if not tracing_wanted(endpoint):
            return None
        provider = otlp_provider(endpoint)
    return RequestTracer(provider)
