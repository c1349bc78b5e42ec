"""A request's handle on the event loop (`Job`), and the `Outbox` that carries answers and
streamed tokens from a model's worker thread to the event loops, one wake-up per iteration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.documents import Document, rejoin
from service.errors import RequestError

if TYPE_CHECKING:
    from service.results import Generation

log = logging.getLogger("heed.jobs")


@dataclass
class TokenEvent:
    token_id: int
    text: str  # the text this token completes; "" while a character or word is unfinished


class Outbox:
    """Callbacks for event loops, collected while the worker thread iterates and sent once after
    each iteration: one wake-up of an event loop per decoder step, not one per streamed token of
    every running request."""

    def __init__(self):
        self._lock = threading.Lock()
        self._calls: dict[asyncio.AbstractEventLoop, list] = {}

    def post(self, loop: asyncio.AbstractEventLoop, callback: Callable, *args) -> None:
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
    """What the front door hands the HTTP layer for a submitted request.

    Created on the event loop; the worker thread posts its tokens and its outcome through the
    outbox, so the event loop alone touches the future and the token queue.
    """

    def __init__(
        self,
        model: str,
        request_id: str,
        loop: asyncio.AbstractEventLoop,
        outbox: Outbox,
        cancel: Callable[[], None],
        stream: bool,
        documents: list[Document] | None = None,
    ):
        self.model, self.request_id, self._documents = model, request_id, documents
        self._loop, self._outbox, self._cancel = loop, outbox, cancel
        self._future: asyncio.Future[list[Generation] | RequestError] = loop.create_future()
        self._tokens: asyncio.Queue[TokenEvent | None] | None = asyncio.Queue() if stream else None

    # -- the worker thread's side --------------------------------------------------------------

    def on_token(self, token_id: int, text: str) -> None:
        if self._tokens is not None:
            self._outbox.post(self._loop, self._tokens.put_nowait, TokenEvent(token_id, text))

    def settle(self, outcome: list[Generation] | RequestError) -> None:
        self._outbox.post(self._loop, self._settle, outcome)

    def _settle(self, outcome: list[Generation] | RequestError) -> None:
        if self._documents is not None and not isinstance(outcome, RequestError):
            outcome = rejoin(self._documents, outcome)  # one answer per text, from its sentences'
        if not self._future.done():
            self._future.set_result(outcome)
        if self._tokens is not None:
            self._tokens.put_nowait(None)

    # -- the event loop's side -----------------------------------------------------------------

    def cancel(self) -> None:
        """The caller is gone: the worker drops the request and frees its rows at its next iteration."""
        if not self._future.done():
            self._cancel()

    async def wait(self, gone: asyncio.Future) -> bool:
        """Wait until the job is answered (True) or `gone` completes first (False)."""
        await asyncio.wait([self._future, gone], return_when=asyncio.FIRST_COMPLETED)
        return self._future.done()

    def outcome(self) -> list[Generation]:
        """The generations, in input order; raises the `RequestError` the request ended with."""
        outcome = self._future.result()
        if isinstance(outcome, RequestError):
            raise outcome
        return outcome

    async def tokens(self) -> AsyncIterator[list[TokenEvent]]:
        """Streamed tokens, in batches of those that arrived together, until the request ends."""
        assert self._tokens is not None, "not a streaming job"
        ended = False
        while not ended:
            batch = [await self._tokens.get()]
            while not self._tokens.empty():
                batch.append(self._tokens.get_nowait())
            ended = batch[-1] is None
            events = batch[:-1] if ended else batch
            if events:
                yield events
