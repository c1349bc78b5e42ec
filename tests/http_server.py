"""Real heed servers for the HTTP tests: `heed serve` in a subprocess on 127.0.0.1 (a free port),
a model repository built locally, real HTTP, and a Prometheus text parser for `/metrics`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from export.demo import build_model_dir, spec
from loadtests.server import ROOT, HeedServer

LONG = 8192  # positions of the translation model: a request can decode for many seconds
LONG_TOKENS = 6000  # a request that decodes for seconds (tests cancel it before it ends)


def build_repo(out: Path) -> Path:
    """`tiny` (translate, 8192 positions), `tiny-en` (the same weights, source languages listed)
    and `brief` (summarize)."""
    _, tiny = build_model_dir(out, "tiny", spec(max_positions=LONG))
    build_model_dir(out, "brief", task="summarize", seed=1)
    copy = shutil.copytree(tiny, out / "tiny-en")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(name="tiny-en", source_languages=["en"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return out


class Server(HeedServer):
    """A test's `heed serve`, with an HTTP client and `/metrics` helpers."""

    def __init__(self, repo: Path, log: Path, **env: str):
        super().__init__(repo, log, **({"HEED_INTRA_OP_THREADS": "1", "HEED_LOG_LEVEL": "warning"} | env))
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = 90) -> None:
        super().wait_ready(timeout)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """Every sample of `/metrics`, keyed by (sample name, labels)."""
        text = self.client.get("/metrics").text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def wait_for(self, name: str, value: float, timeout: float = 20, **labels: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.sample(name, **labels) == value:
                return
            time.sleep(0.05)
        raise AssertionError(f"{name}{labels} is {self.sample(name, **labels)}, not {value}, after {timeout}s")

    def stop(self, timeout: float = 60) -> int:
        self.client.close()
        return super().stop(timeout)


@contextmanager
def running(repo: Path, log: Path, **env: str) -> Iterator[Server]:
    server = Server(repo, log, **env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def offline(model_dir: Path, texts: list[str], *flags: str) -> list[dict]:
    """`heed generate --json` for the texts: what the server must answer for each."""
    args = [sys.executable, "-m", "service.cli", "generate", "--model", str(model_dir), "--json", *flags]
    for text in texts:
        args += ["--text", text]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event name, data) of a Server-Sent Events response, as they arrive."""
    event = "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: ") :])
            event = "message"


def long_stream(server: Server, result: dict, started: threading.Event) -> None:
    """Stream a long request: `started` is set at its first event; once `result["stop"]` is set the
    client hangs up at the next event; `result["ended"]` records when the stream ended by itself."""
    body = {
        "model": "tiny",
        "input": "hello",
        "min_new_tokens": LONG_TOKENS,
        "max_new_tokens": LONG_TOKENS,
        "stream": True,
    }
    with httpx.Client(base_url=server.url, timeout=60) as c, c.stream("POST", "/v1/generate", json=body) as r:
        result["status"] = r.status_code
        for name, event in sse_events(r):
            started.set()
            if result.get("stop"):
                return  # closing the connection cancels the request
            if name != "message" or event.get("done"):
                result["ended"] = time.monotonic()
                return
