"""Waiting for a job's answer on behalf of an HTTP client that may go away."""

from __future__ import annotations

import asyncio

from fastapi import Request

from service.errors import Cancelled
from service.jobs import Job
from service.results import Generation


async def answer(request: Request, job: Job) -> list[Generation]:
    """The job's generations; a client that disconnects first cancels it (its rows are freed at
    the worker's next iteration). The body has been read, so the ASGI server's `receive()`
    completes only when the client disconnects: one wait per request, no polling."""
    gone = asyncio.ensure_future(request.receive())
    try:
        while not await job.wait(gone):
            if gone.result()["type"] == "http.disconnect":
                job.cancel()
                raise Cancelled("the client disconnected")
            gone = asyncio.ensure_future(request.receive())  # not a disconnect: keep listening
    except asyncio.CancelledError:
        job.cancel()
        raise
    finally:
        gone.cancel()
    return job.outcome()
