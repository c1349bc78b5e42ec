"""Open-loop traffic for the reliability scenarios, in each protocol heed speaks, and what its
clients saw.

Every request costs the same whatever its protocol: the scenarios' model decodes exactly
`TOKENS` tokens by default (its manifest's min = max), since LibreTranslate's clients cannot ask
for a length. A protocol says how its request is sent and how its answer is read: a streamed
OpenAI completion is answered only when its stream ends with `[DONE]`; one that ends with an
error event (an injected fault) counts as that error.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

TOKENS = 192  # tokens per request: decoding (not HTTP) bounds capacity
MODEL = "tiny"
TEXT = "the quick brown fox"
ERROR_TYPES = {500: "internal_error", 503: "overloaded", 504: "deadline_exceeded", 429: "overloaded"}


@dataclass
class Outcome:
    """What the clients of one protocol saw."""

    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # error types of non-200 answers
    refused: int = 0  # connections refused: the server was gone (after SIGTERM), nothing was admitted
    transport_errors: int = 0  # the request was sent but no answer came back
    transport_kinds: Counter = field(default_factory=Counter)
    unanswered_ids: list[str] = field(default_factory=list)  # request ids of the transport errors
    shed_without_retry_after: int = 0

    def reconcile(self, server_log: str) -> None:
        """Transport errors of requests heed never saw (no access line with their id: the socket
        was closing after SIGTERM) were not admitted: they count as refused, not lost."""
        seen = set(re.findall(r"\[(r[\w-]+)\]: POST /", server_log))
        unseen = [rid for rid in self.unanswered_ids if rid not in seen]
        self.transport_errors -= len(unseen)
        self.refused += len(unseen)
        self.unanswered_ids = [rid for rid in self.unanswered_ids if rid in seen]

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.transport_errors + self.refused

    @property
    def shed(self) -> int:
        return self.statuses[503] + self.statuses[429]

    @property
    def answered(self) -> int:
        return self.statuses[200]

    @property
    def injected(self) -> int:
        return self.errors["internal_error"]


@dataclass(frozen=True)
class Protocol:
    name: str
    path: str
    body: dict
    stream: bool = False


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol("native", "/v1/translate", {"model": MODEL, "text": TEXT}),
        Protocol("libretranslate", "/translate", {"q": TEXT, "source": "en", "target": "de", "format": "text"}),
        Protocol("openai-stream", "/v1/completions", {"model": MODEL, "prompt": TEXT, "stream": True}, stream=True),
    )
}


def error_type(response: httpx.Response, body: bytes) -> str:
    """The error's type in heed's native and OpenAI shapes; by status in the others'."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and "type" in error:
        return error["type"]
    return ERROR_TYPES.get(response.status_code, str(response.status_code))


async def one_request(client: httpx.AsyncClient, protocol: Protocol, outcome: Outcome, rid: str) -> None:
    try:
        async with client.stream("POST", protocol.path, json=protocol.body, headers={"X-Request-ID": rid}) as r:
            body = await r.aread()
    except httpx.ConnectError:
        outcome.refused += 1
        return
    except httpx.HTTPError as e:
        outcome.transport_errors += 1
        outcome.transport_kinds[f"{type(e).__name__}: {e}"] += 1
        outcome.unanswered_ids.append(rid)
        return
    status = r.status_code
    if status == 200 and protocol.stream:
        events = [line.removeprefix(b"data: ") for line in body.split(b"\n\n") if line.startswith(b"data: ")]
        if events[-1:] != [b"[DONE]"]:  # the stream ended with an error event (or was cut)
            status = 500 if any(b'"error"' in e for e in events) else 0
            body = events[-1] if events else b""
    outcome.statuses[status] += 1
    if status != 200:
        outcome.errors[error_type(r, body) if status else "stream cut"] += 1
        if status in (429, 503) and "retry-after" not in r.headers:
            outcome.shed_without_retry_after += 1


async def open_loop(url: str, rate: float, duration: float, outcomes: dict[str, Outcome], during=None) -> None:
    """Send `rate` requests per second for `duration` seconds, without waiting for answers, taking
    the protocols of `outcomes` in turn; `during(elapsed)` is called between sends (the sigterm
    scenario signals from it)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    protocols = [PROTOCOLS[name] for name in outcomes]
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        tasks, start, n = [], time.monotonic(), 0
        while (elapsed := time.monotonic() - start) < duration:
            if during is not None:
                during(elapsed)
            due = start + n / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            protocol = protocols[n % len(protocols)]
            rid = f"r{n}-{protocol.name}"
            tasks.append(asyncio.create_task(one_request(client, protocol, outcomes[protocol.name], rid)))
            n += 1
        await asyncio.gather(*tasks)
