"""OpenTelemetry traces (service/tracing.py): a request with a W3C `traceparent` gives a server
span in the caller's trace with queueing, prefill and decoding children carrying the request id
and never the text; with an endpoint set, a real `heed serve` exports them over OTLP/HTTP; with
tracing off, neither the SDK nor the exporter is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loadtests.server import ROOT, HeedServer, free_port
from service.http.app import create_app
from service.settings import Settings
from service.tracing import otlp_provider, traces_url, tracing_wanted
from tests.deploy_helpers import wait_until

TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SECRET = "forty-two thousand and seven"  # a request's text: no span may carry it
PHASES = ["heed.queue", "heed.prefill", "heed.decode"]


@pytest.fixture(scope="module")
def traced(tiny_repo):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(Settings(model_repo=tiny_repo, intra_op_threads=1), tracer_provider=provider)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 60, what="models ready")
        exporter.clear()
        yield client, exporter


def test_a_traced_request_continues_the_callers_trace_with_its_phases(traced):
    client, exporter = traced
    headers = {"traceparent": TRACEPARENT, "X-Request-ID": "r-traced"}
    body = {"text": [SECRET, "one two"], "max_new_tokens": 5, "min_new_tokens": 5}
    assert client.post("/v1/translate", json=body, headers=headers).status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["POST /v1/translate"]
    assert f"{server.context.trace_id:032x}" == TRACE_ID and f"{server.parent.span_id:016x}" == PARENT_ID
    assert server.attributes["heed.request_id"] == "r-traced" and server.attributes["http.route"] == "/v1/translate"
    assert server.attributes["http.response.status_code"] == 200 and server.attributes["heed.model"] == "tiny"
    phases = [spans[name] for name in PHASES]
    for phase in phases:
        assert phase.parent.span_id == server.context.span_id and phase.context.trace_id == server.context.trace_id
        assert phase.attributes["heed.request_id"] == "r-traced" and phase.attributes["heed.status"] == "finished"
        assert server.start_time <= phase.start_time <= phase.end_time <= server.end_time
    queue, prefill, decode = phases
    assert queue.end_time == prefill.start_time and prefill.end_time == decode.start_time
    assert decode.attributes["heed.output_tokens"] == 10 and decode.attributes["heed.sequences"] == 2
    assert len(exporter.get_finished_spans()) == 4  # no span per step or token
    assert SECRET not in json.dumps([dict(s.attributes) for s in exporter.get_finished_spans()])


def test_without_traceparent_a_request_starts_a_trace_and_refusals_have_no_phases(traced):
    client, exporter = traced
    exporter.clear()
    assert client.post("/v1/translate", json={"text": "x", "nope": 1}).status_code == 422
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and span.attributes["http.response.status_code"] == 422
    assert span.attributes["heed.request_id"]  # the generated one


def test_tracing_is_on_only_when_an_endpoint_is_configured():
    assert not tracing_wanted(None, {})
    assert tracing_wanted("http://collector:4318", {})
    assert tracing_wanted(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing_wanted("http://collector:4318", {"OTEL_SDK_DISABLED": "true"})
    assert not tracing_wanted(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})


def test_the_endpoint_may_be_a_collector_or_its_traces_url():
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({}, "heed"),
        ({"OTEL_SERVICE_NAME": "translator-eu"}, "translator-eu"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=translator-us"}, "translator-us"),
    ],
)
def test_the_service_is_heed_unless_the_environment_names_it(monkeypatch, environ, name):
    for variable in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    provider = otlp_provider("http://127.0.0.1:9")
    try:
        assert provider.resource.attributes["service.name"] == name
    finally:
        provider.shutdown()


def test_tracing_off_imports_neither_the_sdk_nor_the_exporter(tiny_repo, tmp_path):
    probe = (
        "import sys; from service.http.app import create_app; from service.settings import Settings; "
        f"create_app(Settings(model_repo={str(tiny_repo)!r})); "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))))"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no OTEL_* variables
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps each export's protobuf body."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            Collector.received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_heed_serve_exports_the_spans_over_otlp(tiny_repo, tmp_path):
    collector = ThreadingHTTPServer(("127.0.0.1", free_port()), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    server = HeedServer(tiny_repo, tmp_path / "serve.log", HEED_OTLP_ENDPOINT=endpoint, HEED_INTRA_OP_THREADS="1")
    try:
        server.wait_ready()
        answer = httpx.post(
            server.url + "/v1/translate", json={"text": SECRET}, headers={"traceparent": TRACEPARENT}, timeout=60
        )
        assert answer.status_code == 200
    finally:
        assert server.stop() == 0  # the batch processor exports what is left at exit
        collector.shutdown()
    spans, services = [], set()
    for body in Collector.received:
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"}
            spans += [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert services == {"heed"}
    traced = {span.name for span in spans if span.trace_id.hex() == TRACE_ID}
    assert traced == {"POST /v1/translate", *PHASES}
    assert SECRET.encode() not in b"".join(Collector.received)
