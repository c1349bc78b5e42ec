"""The per-model continuous-batching loop: one thread owns one `Engine` and drives its step loop.

Requests are prepared (validated, tokenized) on the HTTP path, so bad input never reaches the
queue; `submit` puts the prepared sequences of a request in a bounded waiting queue. Each loop
iteration drops cancelled and expired requests (their rows are freed at once), admits waiting
sequences while the KV cache has rows (one encoder pass for the admitted group), then runs one
decoder step for every running row, old and new together. Results and streamed tokens go back to
the event loop through the scheduler's `Outbox`, one `call_soon_threadsafe` per iteration; ONNX
Runtime releases the GIL, so the event loop keeps serving while a step runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from service.engine import Engine, Generation, Sequence
from service.errors import Cancelled, DeadlineExceeded, InternalError, Overloaded, RequestError
from service.faults import inject_decoder_fault
from service.manifest import Manifest, load_manifest
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("heed.scheduler")


@dataclass
class TokenEvent:
    token_id: int
    text: str


class TokenStream:
    """Text deltas of a one-row sequence, for Server-Sent Events.

    `on_token` runs on the scheduler thread after each step; it decodes the whole output so far
    and sends the new suffix, so that tokens which only make sense together (multi-byte
    characters, word-piece joins) come out right; the final event's text is authoritative. The
    stream ends with `None` (see `Job.settle`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, decode, outbox: Outbox):
        self.loop, self.decode, self.outbox = loop, decode, outbox
        self.queue: asyncio.Queue[TokenEvent | None] = asyncio.Queue()
        self.sent = ""

    def on_token(self, sequence: Sequence, token: int) -> None:
        text = self.decode(sequence.search.sequences[0][1:])
        delta = ""
        if not text.endswith("\ufffd"):  # else wait for the rest of a multi-byte character
            common = shared_prefix(self.sent, text)  # all of `sent`, unless decoding re-joined it
            delta, self.sent = text[common:], text
        self.outbox.post(self.loop, self.queue.put_nowait, TokenEvent(token, delta))


def shared_prefix(a: str, b: str) -> int:
    """Length of the common prefix of two strings (fast when `b` extends `a`, the usual case)."""
    if b.startswith(a):
        return len(a)
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


class Outbox:
    """Callbacks for event loops, collected while the scheduler thread iterates and sent once
    after each iteration: one wake-up of an event loop per decoder step, not one per streamed
    token of every running request."""

    def __init__(self):
        self._lock = threading.Lock()
        self._calls: dict[asyncio.AbstractEventLoop, list] = {}

    def post(self, loop: asyncio.AbstractEventLoop, callback, *args) -> None:
        with self._lock:
            self._calls.setdefault(loop, []).append((callback, args))

    def flush(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, {}
        for loop, batch in calls.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_run_all, batch)


def _run_all(batch: list) -> None:
    for callback, args in batch:
        try:
            callback(*args)
        except Exception:  # one failing callback must not keep the others' answers from their clients
            log.exception("an answer could not be handed to the event loop")


class Job:
    """One HTTP request's sequences, from submission to its answer.

    Created on the event loop; then only the scheduler thread changes it (except `cancelled`,
    a flag the loop sets). The answer travels back through `future`, whose result is either the
    generations in input order or the `RequestError` to answer with.
    """

    def __init__(
        self,
        sequences: list[Sequence],
        deadline: float,
        loop: asyncio.AbstractEventLoop,
        outbox: Outbox,
        stream: TokenStream | None = None,
        request_id: str | None = None,
    ):
        self.sequences, self.deadline, self.loop, self.stream = sequences, deadline, loop, stream
        self.outbox = outbox
        self.request_id = request_id
        self.pending: deque[Sequence] = deque(sequences)
        self.future: asyncio.Future[list[Generation] | RequestError] = loop.create_future()
        self.created = time.monotonic()
        self.first_token_at: float | None = None
        self.cancelled = False

    @property
    def complete(self) -> bool:
        return all(s.done for s in self.sequences)

    def settle(self, outcome: list[Generation] | RequestError) -> None:
        self.outbox.post(self.loop, self._settle, outcome)

    def _settle(self, outcome: list[Generation] | RequestError) -> None:
        if not self.future.done():
            self.future.set_result(outcome)
        if self.stream is not None:
            self.stream.queue.put_nowait(None)


class Scheduler:
    """Owns one model's engine on its own thread; see the module docstring for the loop."""

    def __init__(self, directory: Path, manifest: Manifest, settings: Settings, metrics: Metrics):
        self.directory, self.manifest, self.settings, self.metrics = directory, manifest, settings, metrics
        self.name = manifest.name
        self.engine: Engine | None = None
        self.ready = False
        self.load_error: str | None = None
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()  # jobs with sequences not yet admitted
        self._active: list[Job] = []  # jobs with at least one admitted sequence
        self._first_token: dict[int, float] = {}  # id(sequence) -> time of its first token
        self._stopping = False
        self._abort = False
        self.outbox = Outbox()  # answers and streamed tokens on their way to the event loop
        self._thread = threading.Thread(target=self._main, name=f"heed-scheduler-{self.name}", daemon=True)

    # -- event-loop side -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(
        self,
        sequences: list[Sequence],
        deadline: float,
        stream: TokenStream | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Queue a prepared request; raises `Overloaded` when the queue is full or the server stops."""
        with self._cond:
            if self._stopping:
                raise Overloaded("the server is shutting down")
            if len(self._waiting) >= self.settings.queue_size:
                raise Overloaded(f"model '{self.name}' has {len(self._waiting)} requests waiting; retry later")
            job = Job(sequences, deadline, asyncio.get_running_loop(), self.outbox, stream, request_id)
            self._waiting.append(job)
            self.metrics.queue_depth.labels(self.name).set(len(self._waiting))
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client is gone: the next iteration drops the job and frees its rows."""
        with self._cond:
            job.cancelled = True
            self._cond.notify()

    def stop(self, grace: float) -> None:
        """Refuse new requests, let queued and running ones finish for up to `grace` seconds, then
        answer the rest with 503 and end the thread (blocking; call it off the event loop)."""
        with self._cond:
            self._stopping, self.ready = True, False
            self._cond.notify()
        self._thread.join(grace)
        if self._thread.is_alive():
            with self._cond:
                self._abort = True
                self._cond.notify()
            self._thread.join()

    @property
    def idle(self) -> bool:
        return not self._waiting and not self._active

    # -- scheduler thread ----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            load_manifest(self.directory)  # file hashes, checked here: a corrupt model must not stop the others
            self.engine = Engine(self.directory, self.settings, self.manifest)
            if self.settings.warmup:
                self._warm_up()
        except Exception as e:  # the model stays unready and says why; the other models are served
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("model %s failed to load from %s, not served: %s", self.name, self.directory, self.load_error)
            log.debug("model %s load failure", self.name, exc_info=True)
            return
        if self.settings.fault_decoder_run is not None:
            inject_decoder_fault(self.engine.runner, self.settings.fault_decoder_run)
        self.ready = not self._stopping
        log.info("model %s ready (%d KV rows)", self.name, self.engine.cache.max_rows)
        while True:
            with self._cond:
                while not (self._waiting or self._active or self._stopping):
                    self._cond.wait()
                if self._abort or (self._stopping and self.idle):
                    break
            try:
                self._iterate()
            except Exception:
                ids = ", ".join(str(j.request_id) for j in self._active)
                log.exception("scheduler of %s failed an iteration; failing its running requests: %s", self.name, ids)
                self._fail_active(InternalError("the model failed while decoding this request"))
            self.outbox.flush()
        for job in [*self._active, *self._waiting]:
            self._drop(job, Overloaded("the server shut down before this request finished"))
        self.outbox.flush()

    def _warm_up(self) -> None:
        """Decode a couple of tokens so that ORT's first-run allocations happen before traffic."""
        languages = self.manifest.languages
        target = None if languages is None else languages.default or sorted(languages.tokens)[0]
        self.engine.generate(["hello"], {"max_new_tokens": 2}, target_lang=target)

    def _iterate(self) -> None:
        engine, name, m = self.engine, self.name, self.metrics
        now = time.monotonic()
        with self._cond:
            jobs = [*self._active, *(j for j in self._waiting if j not in self._active)]
        for job in jobs:
            if job.cancelled:
                self._drop(job, Cancelled("the client disconnected"))
            elif now >= job.deadline:
                self._drop(job, DeadlineExceeded(f"the request did not finish within its deadline on model '{name}'"))

        group: list[Sequence] = []
        free = engine.cache.free
        with self._cond:
            while self._waiting and self._waiting[0].pending[0].rows <= free:
                job = self._waiting[0]
                sequence = job.pending.popleft()
                free -= sequence.rows
                group.append(sequence)
                if job not in self._active:
                    self._active.append(job)
                if not job.pending:
                    self._waiting.popleft()
            m.queue_depth.labels(name).set(len(self._waiting))
        if group:
            start = time.perf_counter()
            engine.admit(group)
            m.encoder_duration.labels(name).observe(time.perf_counter() - start)
            m.input_tokens.labels(name).inc(sum(len(s.input_ids) for s in group))

        if engine.running:
            m.decode_batch_size.labels(name).observe(engine.cache.used)
            start = time.perf_counter()
            running = list(engine.running)
            finished = engine.step()
            now = time.perf_counter()
            m.decoder_step_duration.labels(name).observe(now - start)
            arrived = time.monotonic()
            for sequence in running:
                self._first_token.setdefault(id(sequence), now)
            for job in self._active:
                if job.first_token_at is None:
                    job.first_token_at = arrived
                    m.time_to_first_token.labels(name).observe(arrived - job.created)
            for sequence in finished:
                self._account(sequence, now)
            for job in [j for j in self._active if j.complete]:
                self._active.remove(job)
                job.settle([s.result for s in job.sequences])
        m.kv_slots_used.labels(name).set(engine.cache.used)

    def _account(self, sequence: Sequence, now: float) -> None:
        """Token counters and time per output token of a sequence that left the batch."""
        first = self._first_token.pop(id(sequence), None)
        tokens = sequence.result.output_tokens
        self.metrics.output_tokens.labels(self.name).inc(tokens)
        if first is not None and tokens > 1:
            self.metrics.time_per_output_token.labels(self.name).observe((now - first) / (tokens - 1))

    def _fail_active(self, error: RequestError) -> None:
        for job in list(self._active):
            try:
                self._drop(job, error)
            except Exception:  # the engine itself is broken: still answer every request
                log.exception("could not cancel a request of %s", self.name)
                if job in self._active:
                    self._active.remove(job)
                job.settle(error)

    def _drop(self, job: Job, error: RequestError) -> None:
        """Take a job out (its running sequences are cancelled, their rows freed) and answer it."""
        now = time.perf_counter()
        for sequence in job.sequences:
            if sequence in self.engine.running:
                self.engine.cancel(sequence)
                self._account(sequence, now)
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
            self.metrics.queue_depth.labels(self.name).set(len(self._waiting))
        if job in self._active:
            self._active.remove(job)
        job.settle(error)
        self.metrics.kv_slots_used.labels(self.name).set(self.engine.cache.used)
