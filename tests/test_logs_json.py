"""`HEED_LOG_FORMAT=json`: every line a served session writes, from start to the end of its
SIGTERM drain, is one JSON object with time, level, logger and request id; access lines carry
the route, status and timing of their request, and no line carries a request's text."""

from __future__ import annotations

import json
import logging
import warnings
from datetime import datetime

import httpx

from loadtests.server import HeedServer
from service.logformat import configure_logging

SECRET = "forty-two thousand and seven"  # a request's text: it must appear in no log line


def test_every_line_of_a_served_session_is_a_json_object(tiny_repo, tmp_path):
    log = tmp_path / "serve.log"
    server = HeedServer(tiny_repo, log, HEED_LOG_FORMAT="json", HEED_LOG_LEVEL="info", HEED_INTRA_OP_THREADS="1")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            body = {"text": SECRET, "max_new_tokens": 4}
            ok = client.post("/v1/translate", json=body, headers={"X-Request-ID": "r-ok"})
            bad = client.post("/v1/translate", json=body | {"nope": 1}, headers={"X-Request-ID": "r-bad"})
            streamed = client.post(
                "/v1/generate",
                json={"model": "tiny", "input": SECRET, "stream": True, "max_new_tokens": 3},
                headers={"X-Request-ID": "r-stream"},
            )
        assert (ok.status_code, bad.status_code, streamed.status_code) == (200, 422, 200)
    finally:
        assert server.stop() == 0
    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # each line parses, or the test fails here
    assert len(entries) >= 6 and all(isinstance(e, dict) for e in entries)
    for entry in entries:
        assert {"time", "level", "logger", "request_id", "message"} <= set(entry), entry
        assert datetime.fromisoformat(entry["time"]).tzinfo is not None
        assert entry["level"] in {"debug", "info", "warning", "error", "critical"}
    assert SECRET not in log.read_text()
    loggers = {e["logger"] for e in entries}
    assert {"heed.access", "heed.worker", "heed.server"} <= loggers and any(n.startswith("uvicorn") for n in loggers)

    access = {e["request_id"]: e for e in entries if e["logger"] == "heed.access"}
    expected = {  # a body that fails the schema is refused before a model is chosen
        "r-ok": ("/v1/translate", 200, "tiny"),
        "r-bad": ("/v1/translate", 422, None),
        "r-stream": ("/v1/generate", 200, "tiny"),
    }
    for request_id, (route, status, model) in expected.items():
        line = access[request_id]
        assert (line["method"], line["route"], line["path"], line["status"]) == ("POST", route, route, status)
        assert line["model"] == model and isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    drained = [e for e in entries if e["logger"] == "heed.server" and "draining" in e["message"]]
    assert drained and drained[0]["request_id"] is None  # outside any request


def test_a_python_warning_is_a_json_line_too(capsys):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging("info", "json")
        warnings.warn("an old option", DeprecationWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    entry = json.loads(lines[-1])
    assert (entry["logger"], entry["level"]) == ("py.warnings", "warning") and "an old option" in entry["message"]
