"""One model's worker thread: it loads the model, then runs the continuous-batching loop.

Each iteration asks the scheduler for a plan, has the engine execute it and gives the result back
to the scheduler; requests that ended are answered through the `Outbox`, one wake-up of the event
loop per iteration. ONNX Runtime releases the GIL, so the event loop keeps serving while a step
runs. The scheduler is shared with the event loop (`submit`, `cancel`) under one lock; the
engine belongs to this thread alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from service.allocator import release_free_memory
from service.engine import Engine, Sequence, StepResult, build_sequences
from service.errors import InternalError, Overloaded
from service.jobs import Job, Outbox
from service.manifest import Manifest, load_manifest
from service.metrics import Metrics
from service.scheduler import Request, RequestStatus, Scheduler, SchedulerOutput, SchedulerUpdate
from service.settings import Settings
from service.tokenizer import TextCodec
from service.tracing import note_scheduled
from service.validation import ModelLimits, RawRequest, RequestCaps, validate

log = logging.getLogger("heed.worker")

# A batch empty this long ends a burst: the memory it took goes back (service/allocator.py).
# Not at once: one client's requests empty the batch between each other, and handing back and
# taking again the same buffers every request cost 8% of its throughput.
IDLE_BEFORE_RELEASE_S = 1.0


class ModelWorker:
    def __init__(self, directory: Path, manifest: Manifest, settings: Settings, metrics: Metrics):
        self.directory, self.manifest, self.name = directory, manifest, manifest.name
        self.settings, self.metrics = settings, metrics
        self.limits = ModelLimits.of(manifest, settings.engine)
        self.caps = RequestCaps(settings.max_texts, settings.max_input_chars, settings.request_timeout)
        self.scheduler = Scheduler(settings.kv_rows, settings.queue_size, name=self.name)
        self.codec: TextCodec | None = None  # set when loaded
        self.ready = False
        self.load_error: str | None = None
        self.outbox = Outbox()
        self._engine: Engine | None = None
        self._jobs: dict[Request, Job] = {}
        self._first_token: dict[Sequence, float] = {}  # perf_counter time of each running sequence's first token
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name=f"heed-worker-{self.name}", daemon=True)

    # -- the event loop's side -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: RawRequest, request_id: str) -> Job:
        """Validate, tokenize and queue a request (the caller checked `ready`); raises `RequestError`s."""
        valid = validate(request, self.manifest, self.codec, self.limits, self.caps)
        loop = asyncio.get_running_loop()
        job = Job(
            self.name, request_id, loop, self.outbox, lambda: self.cancel(scheduled), valid.stream, valid.documents
        )
        sequences = build_sequences(valid, self.manifest, self.codec, job.on_token if valid.stream else None)
        scheduled = Request(request_id, sequences, valid.timeout)  # bound before the job can be cancelled
        with self._cond:
            self.scheduler.add(scheduled)
            self._jobs[scheduled] = job
            self.metrics.queue_depth.labels(self.name).set(len(self.scheduler.waiting))
            self._cond.notify()
        note_scheduled(self.name, scheduled)  # its phases in the HTTP request's trace, if traced
        return job

    def cancel(self, request: Request) -> None:
        with self._cond:
            self.scheduler.cancel(request)
            self._cond.notify()

    @property
    def idle(self) -> bool:
        return self.scheduler.idle

    def stop(self, grace: float) -> None:
        """Refuse new requests, let queued and running ones finish for up to `grace` seconds, then
        answer the rest with 503 and end the thread (blocking; call it off the event loop)."""
        with self._cond:
            self._stopping, self.ready = True, False
            self.scheduler.close()
            self._cond.notify()
        self._thread.join(grace)
        if self._thread.is_alive():
            with self._cond:
                self.scheduler.abort(Overloaded("the server shut down before this request finished"))
                self._cond.notify()
            self._thread.join()

    # -- the worker thread ---------------------------------------------------------------------

    def _main(self) -> None:
        if not self._load():
            return
        settled = True  # nothing taken since memory was last handed back
        while True:
            with self._cond:
                while self.scheduler.idle and not self._stopping:
                    if not self._cond.wait(None if settled else IDLE_BEFORE_RELEASE_S):
                        break  # idle that long: the burst is over
                stopping, plan = self._stopping, None if self.scheduler.idle else self.scheduler.schedule()
            if plan is None:
                if stopping:
                    break
                release_free_memory()
                settled = True
                continue
            settled = False
            self._iterate(plan)
            self.outbox.flush()

    def _load(self) -> bool:
        try:
            load_manifest(self.directory)  # file hashes, checked here: a corrupt model must not stop the others
            codec = TextCodec(self.directory / self.manifest.files.tokenizer)
            self._engine = Engine(self.directory, self.settings.engine, self.manifest, codec)
            if self.settings.warmup:
                self._warm_up()
        except Exception as e:  # the model stays unready and says why; the other models are served
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("model %s failed to load from %s, not served: %s", self.name, self.directory, self.load_error)
            log.debug("model %s load failure", self.name, exc_info=True)
            return False
        if self.settings.fault_decoder_run is not None:
            self._engine.inject_decoder_fault(self.settings.fault_decoder_run)
        self.codec = codec
        self.ready = not self._stopping
        log.info("model %s ready (%d KV rows)", self.name, self.settings.kv_rows)
        return True

    def _warm_up(self) -> None:
        """Decode a couple of tokens so that ORT's first-run allocations happen before traffic
        (whatever length the model's defaults ask for)."""
        languages = self.manifest.languages
        target = None if languages is None else languages.default or sorted(languages.tokens)[0]
        self._engine.generate(["hello"], {"max_new_tokens": 2, "min_new_tokens": 0}, target_lang=target)

    def _iterate(self, plan: SchedulerOutput) -> None:
        try:
            result = self._engine.execute(plan)
        except Exception:
            ids = ", ".join(r.id for r in self.scheduler.running)
            log.exception("model %s failed an iteration; failing its running requests: %s", self.name, ids)
            with self._cond:
                failed = self.scheduler.fail(InternalError("the model failed while decoding this request"))
            self._release([s for r in failed for s in r.sequences])
            self._answer([*plan.dropped, *failed])
        else:
            with self._cond:
                update = self.scheduler.update(plan, result.finished)
            self._record(plan, result, update)
            self._answer([*plan.dropped, *update.finished])
        self.metrics.queue_depth.labels(self.name).set(len(self.scheduler.waiting))
        self.metrics.kv_slots_used.labels(self.name).set(self.scheduler.rows_used)
        self.metrics.kv_cache_bytes.labels(self.name).set(self._engine.cache.nbytes)  # grown or reset this step

    def _release(self, sequences: list[Sequence]) -> None:
        """Free a failed step's rows; an engine too broken for that is left as it is."""
        for sequence in sequences:
            self._first_token.pop(sequence, None)
            try:
                self._engine.cancel(sequence)
            except Exception:
                log.exception("could not free the rows of a request of %s", self.name)

    def _answer(self, requests: list[Request]) -> None:
        for request in requests:
            job = self._jobs.pop(request)
            if request.status is RequestStatus.FINISHED:
                job.settle([s.result for s in request.sequences])
            else:
                job.settle(request.error)

    def _record(self, plan: SchedulerOutput, result: StepResult, update: SchedulerUpdate) -> None:
        m, name, now = self.metrics, self.name, time.perf_counter()
        if result.encode_seconds is not None:
            m.encoder_duration.labels(name).observe(result.encode_seconds)
            m.input_tokens.labels(name).inc(sum(len(s.input_ids) for s in plan.admitted))
        if result.step_seconds is not None:
            m.decode_batch_size.labels(name).observe(result.rows)
            m.decoder_step_duration.labels(name).observe(result.step_seconds)
        for sequence in plan.admitted:
            self._first_token[sequence] = now
        for request in update.started:
            m.time_to_first_token.labels(name).observe(request.first_token_at - request.arrival)
        for sequence in [*result.finished, *plan.cancelled]:
            first = self._first_token.pop(sequence, None)
            tokens = sequence.result.output_tokens
            m.output_tokens.labels(name).inc(tokens)
            if first is not None and tokens > 1:
                m.time_per_output_token.labels(name).observe((now - first) / (tokens - 1))
