"""heed's log lines: text for people (the default), or one JSON object per line for log pipelines
(`HEED_LOG_FORMAT=json`: Loki, Elasticsearch, Cloud Logging and the like parse them without a
grok pattern, as they do vLLM's and TGI's JSON logs).

Every record goes through the root logger's one handler, uvicorn's included (it is started without
a logging configuration of its own), so that no line of a JSON session is plain text. A JSON
line has `time` (UTC, ISO 8601), `level`, `logger`, `request_id` (null outside a request) and
`message`; an access line (service/http/accounting.py) adds `method`, `path`, `route`, `status`,
`duration_ms` and `model` as fields, and a failure its `exception`. Never a request's text: no
log line carries it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
ACCESS_FIELDS = ("method", "path", "route", "status", "duration_ms", "model")  # `extra` of access lines
NO_REQUEST = "-"  # the request id outside a request (service/http/accounting.py: RequestIdFilter)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", NO_REQUEST)
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": None if request_id == NO_REQUEST else request_id,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in ACCESS_FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, style: LogFormat) -> logging.Handler:
    """The root logger's one handler (standard error), formatted as `style`; returned so that the
    server can add its filters."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning is a record too, not a plain line on standard error
    return handler
