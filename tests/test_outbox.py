"""The worker's outbox: what a decoder step produced reaches each event loop in one wake-up."""

from __future__ import annotations

from service.jobs import Outbox


class FakeLoop:
    def __init__(self, closed: bool = False):
        self.closed, self.wakeups = closed, []

    def call_soon_threadsafe(self, callback, *args):
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.wakeups.append((callback, args))

    def run(self):
        for callback, args in self.wakeups:
            callback(*args)


def test_one_wakeup_per_loop_per_flush_in_posting_order():
    outbox, a, b, closed, seen = Outbox(), FakeLoop(), FakeLoop(), FakeLoop(closed=True), []
    for i in range(3):
        outbox.post(a, seen.append, f"a{i}")
    outbox.post(b, seen.append, "b0")
    outbox.post(closed, seen.append, "lost")  # its clients are gone: dropped without an error
    assert not a.wakeups  # nothing leaves before the flush
    outbox.flush()
    assert len(a.wakeups) == 1 and len(b.wakeups) == 1
    a.run()
    b.run()
    assert seen == ["a0", "a1", "a2", "b0"]
    outbox.flush()  # empty: nobody is woken
    assert len(a.wakeups) == 1
