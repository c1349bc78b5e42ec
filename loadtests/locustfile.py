"""Load test of a heed server: the traffic mix a translation/summarization service sees, with a ramp.

Mix (task weights): single short translations (most requests), lists of texts in one request,
long documents to summarize, and streamed generation (Server-Sent Events). Models are found at
start through `GET /v1/models`, so the file runs against any model repository; a task whose kind
of model the server does not serve (e.g. no summarize model) is skipped, and said so once.

A response counts as a failure unless it is a 2xx whose body has the right shape (one output per
input text; for streams, token events and a final `done` event, no `error` event): a server that
answers quickly but wrongly must not pass. `make loadtest` runs this headless; the shape below
ramps to LOADTEST_USERS over LOADTEST_RAMP seconds, holds, and stops at LOADTEST_DURATION seconds.

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 --csv out/heed
"""

from __future__ import annotations

import json
import logging
import os
import random
from typing import ClassVar

from locust import HttpUser, LoadTestShape, between, events, task
from locust.env import Environment

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, how are you today?",
    "one two three four five six seven eight nine ten",
    "a long report about the weather in the mountains and the sea",
    "numbers like 12 and 345 are written with digits",
    "the meeting was moved to thursday afternoon",
    "please send the invoice before the end of the month",
]

log = logging.getLogger("heed.loadtest")


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class RampThenHold(LoadTestShape):
    """Linear ramp from 0 to LOADTEST_USERS users over LOADTEST_RAMP s, hold, stop at LOADTEST_DURATION s.
    Always bounded: the run ends by itself even without `--run-time`."""

    users = _int_env("LOADTEST_USERS", 8)
    ramp = _int_env("LOADTEST_RAMP", 20)
    duration = _int_env("LOADTEST_DURATION", 60)

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed >= self.duration:
            return None
        target = max(1, round(self.users * elapsed / self.ramp)) if elapsed < self.ramp else self.users
        return target, max(1.0, self.users / max(self.ramp, 1))


class HeedUser(HttpUser):
    """One client: mostly short translations, sometimes batches, long summaries and streams."""

    wait_time = between(0.2, 1.0)
    skipped: ClassVar[set[str]] = set()  # kinds of task already reported as skipped (class-wide: say it once)

    def on_start(self) -> None:
        with self.client.get("/v1/models", name="GET /v1/models", catch_response=True) as response:
            models = response.json().get("models", []) if response.status_code == 200 else []
            if not models:
                response.failure(f"no models listed: {response.status_code} {response.text[:200]}")
                self.models: dict[str, list[dict]] = {}
                return
            self.models = {}
            for info in models:
                self.models.setdefault(info["task"], []).append(info)

    def _model(self, kind: str) -> dict | None:
        found = self.models.get(kind)
        if not found:
            if kind not in HeedUser.skipped:
                HeedUser.skipped.add(kind)
                log.warning("the server has no %s model: those requests are skipped", kind)
            return None
        return random.choice(found)

    def _post_texts(self, route: str, key: str, model: dict, texts: list[str] | str, name: str, **options) -> None:
        body = {"model": model["name"], "text": texts, **options}
        with self.client.post(route, json=body, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:300]}")
                return
            outputs = response.json().get(key)
            expected = 1 if isinstance(texts, str) else len(texts)
            if not isinstance(outputs, list) or len(outputs) != expected:
                response.failure(f"expected {expected} {key}, got {str(outputs)[:200]}")

    @task(10)
    def translate_one(self) -> None:
        model = self._model("translate")
        if model:
            text = random.choice(SENTENCES)
            self._post_texts("/v1/translate", "translations", model, text, "translate one", max_new_tokens=24)

    @task(3)
    def translate_list(self) -> None:
        model = self._model("translate")
        if model:
            texts = random.sample(SENTENCES, k=random.randint(2, 6))
            self._post_texts("/v1/translate", "translations", model, texts, "translate list", max_new_tokens=24)

    @task(2)
    def summarize_long(self) -> None:
        model = self._model("summarize")
        if model:
            # A long document: the model's limit decides how much of it is read (truncate, as a
            # client summarizing arbitrary documents would ask).
            document = " ".join(random.choices(SENTENCES, k=40))
            self._post_texts(
                "/v1/summarize", "summaries", model, document, "summarize long", max_new_tokens=32, truncate=True
            )

    @task(2)
    def generate_stream(self) -> None:
        model = self._model("translate") or self._model("summarize")
        if not model:
            return
        body = {"model": model["name"], "input": random.choice(SENTENCES), "stream": True, "max_new_tokens": 24}
        with self.client.post(
            "/v1/generate", json=body, name="generate stream", stream=True, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:300]}")
                return
            problem = check_event_stream(response.iter_lines(decode_unicode=True))
            if problem:
                response.failure(problem)


def check_event_stream(lines) -> str | None:
    """None if an SSE body is token events then one final `done` event (no `error` event); else what is wrong."""
    event, tokens, done = None, 0, None
    for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = json.loads(line.split(":", 1)[1])
            if event == "error" or "error" in data:
                return f"error event: {data}"
            if data.get("done"):
                done = data
            elif "token" in data:
                tokens += 1
            event = None
    if done is None:
        return f"stream ended without a done event after {tokens} token events"
    if tokens == 0 and done.get("output_tokens"):
        return f"no token events before a done event with {done.get('output_tokens')} output tokens"
    return None


@events.test_stop.add_listener
def _report_skipped(environment: Environment, **_) -> None:
    if HeedUser.skipped:
        log.warning("skipped request kinds (no such model served): %s", ", ".join(sorted(HeedUser.skipped)))
