"""The scheduler core: at each iteration, which requests leave, which sequences join the batch.

As in vLLM v1, the scheduler decides and the engine executes. `schedule()` drops cancelled,
expired and aborted requests (their rows are free at once) and admits waiting sequences, first
come first served, while the KV cache has rows for them; the engine runs that plan (cancels,
one encoder pass for the admitted group, one decoder step for every running row) and `update()`
applies its result: the rows of finished sequences are freed and a request whose sequences have
all finished is done. A short request therefore never waits for an unrelated long one: it joins
the running batch as soon as rows are free, and leaves it when it is done.

No threads and no ONNX Runtime here: the model's worker thread (service/worker.py) and the
offline `Engine.generate` drive it, and tests drive it with fake sequences. It keeps its own
count of KV rows, so a plan never asks the engine for rows it does not have. One clock
(`clock`, monotonic seconds) stamps arrivals and checks deadlines.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from service.errors import Cancelled, DeadlineExceeded, Overloaded, RequestError


class SequenceLike(Protocol):
    rows: int  # KV-cache rows it takes while it runs (1, or a beam's width)


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # no sequence admitted yet
    RUNNING = "running"  # some sequences admitted, not all finished
    FINISHED = "finished"  # every sequence finished: answered with its generations
    CANCELLED = "cancelled"  # the client went away
    EXPIRED = "expired"  # its deadline passed first
    FAILED = "failed"  # the engine failed while it ran
    ABORTED = "aborted"  # the server stopped before it finished


class Request:
    """One caller's sequences (one per input text), from `add` to its end."""

    def __init__(self, request_id: str, sequences: list[SequenceLike], timeout: float = math.inf):
        self.id, self.sequences, self.timeout = request_id, sequences, timeout
        self.status = RequestStatus.WAITING
        self.arrival = self.deadline = math.nan  # set by `Scheduler.add`, on the scheduler's clock
        self.admitted_at: float | None = None  # its first sequence admitted (a trace's queueing ends)
        self.first_token_at: float | None = None
        self.ended_at: float | None = None  # finished or dropped
        self.error: RequestError | None = None  # why it ended, unless FINISHED
        self.pending: deque[SequenceLike] = deque(sequences)  # not admitted yet
        self.running: set[SequenceLike] = set()  # admitted, not finished
        self.cancel_requested = False


@dataclass
class SchedulerOutput:
    """The plan of one iteration, for the engine to execute."""

    admitted: list[SequenceLike] = field(default_factory=list)  # to encode and start, in this order
    cancelled: list[SequenceLike] = field(default_factory=list)  # running sequences of dropped requests
    dropped: list[Request] = field(default_factory=list)  # ended by this decision, to be answered


@dataclass
class SchedulerUpdate:
    started: list[Request]  # got their first token in this step
    finished: list[Request]  # every sequence finished in or before this step


class Scheduler:
    def __init__(
        self, max_rows: int, queue_size: int | None = None, clock: Callable[[], float] = time.monotonic, name: str = ""
    ):
        self.max_rows, self.queue_size, self.clock, self.name = max_rows, queue_size, clock, name
        self.waiting: deque[Request] = deque()  # requests with sequences not admitted yet, in arrival order
        self.running: list[Request] = []  # requests with at least one admitted sequence
        self.rows_used = 0
        self.closed = False
        self._abort: RequestError | None = None
        self._owner: dict[SequenceLike, Request] = {}  # admitted, unfinished sequences

    @property
    def free_rows(self) -> int:
        return self.max_rows - self.rows_used

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def add(self, request: Request) -> None:
        """Queue a request; `Overloaded` when the queue is full or the scheduler is closed."""
        if self.closed:
            raise Overloaded("the server is shutting down")
        if self.queue_size is not None and len(self.waiting) >= self.queue_size:
            raise Overloaded(f"model '{self.name}' has {len(self.waiting)} requests waiting; retry later")
        request.arrival = self.clock()
        request.deadline = request.arrival + request.timeout
        self.waiting.append(request)

    def cancel(self, request: Request) -> None:
        """The caller is gone: the next `schedule()` drops the request."""
        request.cancel_requested = True

    def close(self) -> None:
        """Refuse new requests; the queued and running ones go on."""
        self.closed = True

    def abort(self, error: RequestError) -> None:
        """End every request at the next `schedule()`, answered with `error`."""
        self.closed, self._abort = True, error

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        now = self.clock()
        for request in [*self.running, *(r for r in self.waiting if r.status is RequestStatus.WAITING)]:
            if self._abort is not None:
                self._drop(request, RequestStatus.ABORTED, self._abort, output)
            elif request.cancel_requested:
                self._drop(request, RequestStatus.CANCELLED, Cancelled("the client disconnected"), output)
            elif now >= request.deadline:
                error = DeadlineExceeded(f"the request did not finish within its deadline on model '{self.name}'")
                self._drop(request, RequestStatus.EXPIRED, error, output)
        while self.waiting and self.waiting[0].pending[0].rows <= self.free_rows:
            request = self.waiting[0]
            sequence = request.pending.popleft()
            self.rows_used += sequence.rows
            self._owner[sequence] = request
            request.running.add(sequence)
            output.admitted.append(sequence)
            if request.status is RequestStatus.WAITING:
                request.status, request.admitted_at = RequestStatus.RUNNING, now
                self.running.append(request)
            if not request.pending:
                self.waiting.popleft()
        return output

    def update(self, output: SchedulerOutput, finished: Iterable[SequenceLike]) -> SchedulerUpdate:
        """Apply an executed step: `finished` are the sequences that ended in it."""
        now = self.clock()
        started = [r for r in self.running if r.first_token_at is None]
        for request in started:
            request.first_token_at = now
        done = []
        for sequence in finished:
            request = self._owner.pop(sequence)
            self.rows_used -= sequence.rows
            request.running.discard(sequence)
            if not request.running and not request.pending:
                request.status, request.ended_at = RequestStatus.FINISHED, now
                self.running.remove(request)
                done.append(request)
        return SchedulerUpdate(started, done)

    def fail(self, error: RequestError) -> list[Request]:
        """The engine failed a step: every request with admitted sequences ends with `error`."""
        failed = list(self.running)
        for request in failed:
            self._drop(request, RequestStatus.FAILED, error, SchedulerOutput())
        return failed

    def _drop(self, request: Request, status: RequestStatus, error: RequestError, output: SchedulerOutput) -> None:
        for sequence in request.running:
            del self._owner[sequence]
            self.rows_used -= sequence.rows
            output.cancelled.append(sequence)
        request.running.clear()
        request.pending.clear()
        if request in self.running:
            self.running.remove(request)
        if request in self.waiting:
            self.waiting.remove(request)
        request.status, request.error, request.ended_at = status, error, self.clock()
        output.dropped.append(request)
