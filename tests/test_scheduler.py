"""The scheduler core on its own: fake sequences, fake step results, a fake clock; no ONNX Runtime,
no server. Each test drives `schedule()` / `update()` as the worker thread does."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from service.errors import Cancelled, DeadlineExceeded, InternalError, Overloaded
from service.scheduler import Request, RequestStatus, Scheduler, SchedulerOutput


@dataclass(eq=False)
class FakeSequence:
    rows: int = 1
    steps: int = 3  # decoder steps until it finishes
    taken: int = 0


class FakeEngine:
    """Executes plans as the engine would: cancels, admits, then one step for every running sequence."""

    def __init__(self, rows: int):
        self.rows, self.running, self.steps = rows, [], 0

    def execute(self, plan: SchedulerOutput) -> list[FakeSequence]:
        for s in plan.cancelled:
            self.running.remove(s)
        self.running += plan.admitted
        assert sum(s.rows for s in self.running) <= self.rows, "the scheduler over-admitted"
        finished = []
        for s in list(self.running):
            s.taken += 1
            if s.taken == s.steps:
                self.running.remove(s)
                finished.append(s)
        self.steps += 1
        return finished


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request(name: str, *sequences: FakeSequence, timeout: float = 60.0) -> Request:
    return Request(name, list(sequences) or [FakeSequence()], timeout)


def iterate(scheduler: Scheduler, engine: FakeEngine) -> tuple[SchedulerOutput, list[Request]]:
    plan = scheduler.schedule()
    update = scheduler.update(plan, engine.execute(plan))
    return plan, update.finished


def run_until_idle(scheduler: Scheduler, engine: FakeEngine, limit: int = 1000) -> list[Request]:
    ended = []
    for _ in range(limit):
        if scheduler.idle:
            return ended
        plan, finished = iterate(scheduler, engine)
        ended += plan.dropped + finished
    raise AssertionError("the scheduler did not become idle")


def test_sched_admits_in_arrival_order_while_rows_last():
    scheduler = Scheduler(max_rows=4)
    a = request("a", FakeSequence(), FakeSequence())
    beam = request("beam", FakeSequence(rows=3))
    c = request("c")
    for r in (a, beam, c):
        scheduler.add(r)
    plan = scheduler.schedule()
    assert plan.admitted == a.sequences  # the beam needs 3 rows, 2 are free: it waits, and so does c behind it
    assert scheduler.rows_used == 2 and list(scheduler.waiting) == [beam, c]
    assert (a.status, beam.status, c.status) == (RequestStatus.RUNNING, RequestStatus.WAITING, RequestStatus.WAITING)
    scheduler.update(plan, a.sequences)  # both finish: their rows are free again
    assert a.status is RequestStatus.FINISHED and scheduler.rows_used == 0
    assert scheduler.schedule().admitted == [*beam.sequences, *c.sequences]
    assert scheduler.rows_used == 4 and not scheduler.waiting


def test_sched_a_request_of_many_texts_finishes_when_its_last_sequence_does():
    scheduler = Scheduler(max_rows=2)
    texts = [FakeSequence(steps=n) for n in (1, 2, 3)]
    r = request("many", *texts)
    scheduler.add(r)
    engine, finished_at = FakeEngine(2), None
    for step in range(1, 10):
        _, finished = iterate(scheduler, engine)
        if finished:
            finished_at = step
            break
        assert r.status is RequestStatus.RUNNING
    # rows 2: texts 1 and 2 start together; text 3 joins when text 1 leaves after step 1, and runs 3 steps
    assert finished == [r] and finished_at == 4 and r.error is None
    assert scheduler.idle and scheduler.rows_used == 0


def test_sched_a_short_request_overtakes_long_ones():
    scheduler, engine = Scheduler(max_rows=3), FakeEngine(3)
    long = [request(f"long{i}", FakeSequence(steps=50)) for i in range(2)]
    for r in long:
        scheduler.add(r)
    for _ in range(5):
        iterate(scheduler, engine)
    short = request("short", FakeSequence(steps=2))
    scheduler.add(short)
    plan, _ = iterate(scheduler, engine)
    assert plan.admitted == short.sequences  # joins the running batch at once
    _, finished = iterate(scheduler, engine)
    assert finished == [short]
    assert all(r.status is RequestStatus.RUNNING for r in long)


def test_sched_first_token_is_stamped_once_on_the_scheduler_clock():
    clock = Clock()
    scheduler, engine = Scheduler(max_rows=1, clock=clock), FakeEngine(1)
    r = request("r", FakeSequence(steps=3))
    scheduler.add(r)
    clock.now += 0.25
    plan = scheduler.schedule()
    update = scheduler.update(plan, engine.execute(plan))
    assert update.started == [r] and r.first_token_at - r.arrival == pytest.approx(0.25)
    clock.now += 1
    plan = scheduler.schedule()
    assert scheduler.update(plan, engine.execute(plan)).started == []


def test_sched_cancel_frees_the_rows_for_the_next_request_in_the_same_iteration():
    scheduler, engine = Scheduler(max_rows=2), FakeEngine(2)
    gone, queued = request("gone", FakeSequence(rows=2, steps=100)), request("queued", FakeSequence(rows=2))
    scheduler.add(gone)
    scheduler.add(queued)
    iterate(scheduler, engine)
    assert scheduler.schedule().admitted == []  # no rows
    scheduler.cancel(gone)
    plan = scheduler.schedule()
    assert plan.dropped == [gone] and plan.cancelled == gone.sequences and plan.admitted == queued.sequences
    assert gone.status is RequestStatus.CANCELLED and isinstance(gone.error, Cancelled)
    assert scheduler.rows_used == 2  # the queued request's rows
    engine.execute(plan)
    assert engine.running == queued.sequences


def test_sched_deadlines_expire_waiting_and_running_requests():
    clock = Clock()
    scheduler, engine = Scheduler(max_rows=1, clock=clock, name="m"), FakeEngine(1)
    running = request("running", FakeSequence(steps=100), timeout=5)
    waiting = request("waiting", timeout=2)
    patient = request("patient", FakeSequence(steps=100), timeout=60)
    for r in (running, waiting, patient):
        scheduler.add(r)
    iterate(scheduler, engine)
    clock.now += 3
    plan = scheduler.schedule()
    assert plan.dropped == [waiting] and waiting.status is RequestStatus.EXPIRED
    assert isinstance(waiting.error, DeadlineExceeded) and "model 'm'" in waiting.error.message
    clock.now += 3
    plan = scheduler.schedule()
    assert plan.dropped == [running] and plan.cancelled == running.sequences
    assert plan.admitted == patient.sequences  # the expired request's row goes to the next one


def test_sched_a_full_queue_refuses_and_admission_makes_room():
    scheduler = Scheduler(max_rows=1, queue_size=2, name="m")
    scheduler.add(request("a"))
    scheduler.add(request("b"))
    with pytest.raises(Overloaded, match="model 'm' has 2 requests waiting"):
        scheduler.add(request("c"))
    scheduler.schedule()  # a is admitted: one waits
    scheduler.add(request("c"))
    assert len(scheduler.waiting) == 2


def test_sched_drain_answers_everything_admitted():
    scheduler, engine = Scheduler(max_rows=2), FakeEngine(2)
    admitted = [request(f"r{i}", FakeSequence(steps=2 + i)) for i in range(5)]
    for r in admitted:
        scheduler.add(r)
    iterate(scheduler, engine)
    scheduler.close()
    with pytest.raises(Overloaded, match="shutting down"):
        scheduler.add(request("late"))
    ended = run_until_idle(scheduler, engine)
    assert sorted(r.id for r in ended) == [r.id for r in admitted]  # every one, the queued ones too
    assert all(r.status is RequestStatus.FINISHED for r in admitted)


def test_sched_abort_ends_the_rest_with_the_given_error():
    scheduler, engine = Scheduler(max_rows=1), FakeEngine(1)
    rs = [request(f"r{i}", FakeSequence(steps=10)) for i in range(3)]
    for r in rs:
        scheduler.add(r)
    iterate(scheduler, engine)
    scheduler.abort(Overloaded("the server shut down before this request finished"))
    plan = scheduler.schedule()
    assert plan.dropped == rs and plan.cancelled == rs[0].sequences and plan.admitted == []
    assert all(r.status is RequestStatus.ABORTED and r.error.status == 503 for r in rs)
    assert scheduler.idle and scheduler.rows_used == 0


def test_sched_a_failed_step_fails_the_running_requests_only():
    scheduler, engine = Scheduler(max_rows=1), FakeEngine(1)
    running, waiting = request("running", FakeSequence(steps=10)), request("waiting")
    scheduler.add(running)
    scheduler.add(waiting)
    scheduler.schedule()  # the engine raises while executing this plan
    failed = scheduler.fail(InternalError("the model failed while decoding this request"))
    assert failed == [running] and running.status is RequestStatus.FAILED and running.error.status == 500
    assert scheduler.rows_used == 0 and waiting.status is RequestStatus.WAITING
    engine.running.clear()
    assert run_until_idle(scheduler, engine) == [waiting] and waiting.status is RequestStatus.FINISHED
