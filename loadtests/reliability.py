"""Reliability scenarios against a real `heed serve` on 127.0.0.1, with a table of figures.

    python -m loadtests.reliability --duration 60        # `make reliability`
    python -m loadtests.reliability --duration 8 --scenario overload

Each scenario starts its own server on a free loopback port (tiny models built locally), drives
it with an open-loop asyncio client (requests keep arriving at a fixed rate whether or not the
server keeps up, the way real overload happens) in heed's native API, LibreTranslate's and
OpenAI's streamed completions at once, taking turns (loadtests/traffic.py), and reports, per
scenario and protocol:

- sent, admitted (not shed), answered (admitted and given 200), shed (503/429, each with
  Retry-After), lost (admitted but never answered: transport errors, timeouts, unexpected errors),
  unexpected 5xx (any 5xx but a shed 503 or an injected fault's 500), peak RSS of the server,
  whether RSS plateaued, and recovery time (end of load until the queue and KV gauges are 0 and a
  probe request is answered).

Scenarios: `overload` (3x the measured capacity), `fault` (load with an ONNX Runtime failure
injected into one decoder run: its batch gets 500, everything else is answered), `sigterm` (SIGTERM
in the middle of the load: admitted requests are drained, new ones shed, exit 0). The exit status is
1 when any scenario lost an admitted request or answered an unexpected 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtests.server import HeedServer
from loadtests.traffic import MODEL, PROTOCOLS, TOKENS, Outcome, open_loop

FAULT_RUN = 100  # the decoder run (after warm-up) that fails in the fault scenario: early in its load
SERVER_ENV = {"HEED_KV_ROWS": "8", "HEED_QUEUE_SIZE": "16", "HEED_INTRA_OP_THREADS": "1", "HEED_LOG_LEVEL": "warning"}


def build_repo(out: Path, forced: bool = True) -> Path:
    """A repository with the demo `tiny` translation model (export.demo: needs torch) that decodes
    exactly TOKENS tokens unless told otherwise (`forced`), so that every protocol's request costs
    the same; not `forced`: the demo's own defaults, for traffic that sets its own lengths (locust's)."""
    from export.demo import build_model_dir, spec

    _, directory = build_model_dir(out, MODEL, spec(max_positions=2 * TOKENS))
    if forced:
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest["generation"] |= {"min_new_tokens": TOKENS, "max_new_tokens": TOKENS}
        (directory / "manifest.json").write_text(json.dumps(manifest))
    return out


class Server(HeedServer):
    """`heed serve` with the scenarios' settings, its RSS sampled in the background once ready."""

    def __init__(self, repo: Path, log: Path, port: int | None = None, **env: str):
        super().__init__(repo, log, port, **(SERVER_ENV | env))
        self.rss: list[tuple[float, int]] = []  # (monotonic time, bytes)
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)

    def wait_ready(self, timeout: float = 120) -> None:
        super().wait_ready(timeout)
        self._sampler.start()

    def _sample_rss(self) -> None:
        while self._sampling and self.process.poll() is None:
            try:
                for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss.append((time.monotonic(), int(line.split()[1]) * 1024))
            except FileNotFoundError:
                return
            time.sleep(0.2)

    def gauges(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        wanted = {"heed_queue_depth", "heed_kv_slots_used"}
        return {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name in wanted and s.labels.get("model") == MODEL
        }

    def stop(self, timeout: float = 60) -> int:
        self._sampling = False
        return super().stop(timeout)


def recovery_seconds(server: Server, load_end: float, timeout: float = 60) -> float:
    """Seconds from the end of the load until the gauges are 0 and a probe is answered 200."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        gauges = server.gauges()
        if gauges and all(v == 0 for v in gauges.values()):
            probe = httpx.post(
                f"{server.url}/v1/translate",
                json={"model": MODEL, "text": "a", "max_new_tokens": 1, "min_new_tokens": 0},
            )
            if probe.status_code == 200:
                return time.monotonic() - load_end
        time.sleep(0.05)
    raise AssertionError(f"not recovered {timeout}s after the load: {server.gauges()}")


@dataclass
class Report:
    """One protocol's figures in one scenario (the server's RSS and recovery are shared)."""

    scenario: str
    protocol: str
    rate: float
    served: float  # answered requests per second, from the start of the load to its last answer
    outcome: Outcome
    peak_rss: int
    rss_plateau: bool
    recovery: float | None
    exit_code: int | None = None
    expected_injected: bool = False

    @property
    def admitted(self) -> int:
        return self.outcome.sent - self.outcome.shed - self.outcome.refused

    @property
    def unexpected_5xx(self) -> int:
        o = self.outcome
        fives = sum(n for status, n in o.statuses.items() if status >= 500 and status != 503)
        return fives - (o.injected if self.expected_injected else 0)

    @property
    def lost(self) -> int:
        """Admitted requests that got no answer: neither 200 nor an expected injected 500."""
        o = self.outcome
        others = sum(n for status, n in o.statuses.items() if status not in (200, 503, 429, 500))
        return o.transport_errors + others + (o.statuses[500] - (o.injected if self.expected_injected else 0))

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.unexpected_5xx == 0
            and self.outcome.shed_without_retry_after == 0
            and self.rss_plateau
            and self.exit_code in (None, 0)
            and (self.outcome.refused == 0 or self.scenario == "sigterm")
        )


def plateaued(samples: list[tuple[float, int]], start: float, end: float) -> bool:
    """RSS in the second half of the load stays within 10% (+32 MiB) of the first half's peak."""
    first = [b for t, b in samples if start <= t < (start + end) / 2]
    second = [b for t, b in samples if (start + end) / 2 <= t <= end]
    if not first or not second:
        return True  # too short to tell: not a failure of the server
    return max(second) <= max(first) * 1.10 + (32 << 20)


def capacity(repo: Path, workdir: Path, seconds: float = 5, probe_rate: float = 100) -> float:
    """Requests per second a saturated server answers: an open-loop burst well over what it can
    take (the rest is shed), answered requests over the time until the last answer. A closed loop
    would measure the client's round trips as much as the server."""
    server = Server(repo, workdir / "capacity.log")
    try:
        server.wait_ready()
        asyncio.run(open_loop(server.url, probe_rate, 2, {"native": Outcome()}))  # ORT's first-run allocations
        outcomes, start = {name: Outcome() for name in PROTOCOLS}, time.monotonic()
        asyncio.run(open_loop(server.url, probe_rate, seconds, outcomes))
        return sum(o.answered for o in outcomes.values()) / (time.monotonic() - start)
    finally:
        server.stop()


def run_scenario(name: str, repo: Path, rate: float, duration: float, workdir: Path) -> list[Report]:
    """One scenario's server, its load at `rate` requests per second in every protocol, and the
    figures of each protocol."""
    env = {"HEED_FAULT_DECODER_RUN": str(FAULT_RUN)} if name == "fault" else {}
    if name == "sigterm":  # access lines (with request ids) tell which failed connections heed never saw
        env |= {"HEED_SHUTDOWN_GRACE": "60", "HEED_LOG_LEVEL": "info"}
    server = Server(repo, workdir / f"{name}.log", **env)
    exit_code = None
    try:
        server.wait_ready()
        outcomes = {protocol: Outcome() for protocol in PROTOCOLS}
        signalled: list[float] = []

        def during(elapsed: float) -> None:
            if name == "sigterm" and not signalled and elapsed >= duration / 2:
                server.process.send_signal(signal.SIGTERM)
                signalled.append(elapsed)

        start = time.monotonic()
        asyncio.run(open_loop(server.url, rate, duration, outcomes, during))
        load_end = time.monotonic()
        recovery = None
        if name == "sigterm":
            exit_code = server.process.wait(90)
            for outcome in outcomes.values():
                outcome.reconcile(server.log.read_text())
        else:
            recovery = recovery_seconds(server, load_end)
        peak, plateau = max((b for _, b in server.rss), default=0), plateaued(server.rss, start, load_end)
        share = rate / len(outcomes)
        return [
            Report(
                name,
                protocol,
                share,
                outcome.answered / (load_end - start),
                outcome,
                peak,
                plateau,
                recovery,
                exit_code,
                expected_injected=name == "fault",
            )
            for protocol, outcome in outcomes.items()
        ]
    finally:
        server.stop()


def table(reports: list[Report]) -> str:
    head = (
        "scenario",
        "protocol",
        "rate/s",
        "served/s",
        "sent",
        "admitted",
        "answered",
        "shed",
        "refused",
        "injected 500",
        "lost",
        "unexpected 5xx",
        "peak RSS MiB",
        "RSS plateau",
        "recovery s",
        "ok",
    )
    rows = [
        (
            r.scenario,
            r.protocol,
            f"{r.rate:.0f}",
            f"{r.served:.0f}",
            r.outcome.sent,
            r.admitted,
            r.outcome.answered,
            r.outcome.shed,
            r.outcome.refused,
            r.outcome.injected,
            r.lost,
            r.unexpected_5xx,
            f"{r.peak_rss / (1 << 20):.0f}",
            "yes" if r.rss_plateau else "NO",
            "-" if r.recovery is None else f"{r.recovery:.2f}",
            "yes" if r.ok else "NO",
        )
        for r in reports
    ]
    cells = [tuple(str(c) for c in row) for row in [head, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of load per scenario")
    parser.add_argument(
        "--scenario", action="append", choices=["overload", "fault", "sigterm"], help="default: all three"
    )
    parser.add_argument("--model-repo", type=Path, help="a repository with a `tiny` model (default: built now)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="heed-reliability-") as tmp:
        workdir = Path(tmp)
        repo = args.model_repo or build_repo(workdir / "models")
        rate = 3 * capacity(repo, workdir)
        reports = []
        for name in args.scenario or ["overload", "fault", "sigterm"]:
            print(f"scenario {name}: {args.duration:g}s at {rate:.0f} requests/s ...", file=sys.stderr, flush=True)
            for report in run_scenario(name, repo, rate, args.duration, workdir):
                reports.append(report)
                if not report.ok:
                    print(f"  {name} {report.protocol}: {report.outcome}", file=sys.stderr)
    print(table(reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
