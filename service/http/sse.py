"""Server-Sent Events: the framing, and a streaming job's events in heed's native shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from service.errors import RequestError
from service.http.errors import error_body
from service.jobs import Job

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of the stream


def sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def native_events(job: Job) -> AsyncIterator[str]:
    """Token events (those that arrived together in one write), then one final event with the
    full text and finish_reason, or an error event. If the client disconnects, Starlette cancels
    this generator: the job is cancelled."""
    try:
        async for events in job.tokens():
            yield "".join(sse({"token": {"id": e.token_id, "text": e.text}}) for e in events)
        try:
            [g] = job.outcome()
        except RequestError as e:
            yield sse(error_body(e.type, e.message, job.request_id), event="error")
            return
        final = {
            "done": True,
            "text": g.text,
            "finish_reason": g.finish_reason,
            "token_ids": g.token_ids,
            "input_tokens": g.input_tokens,
            "output_tokens": g.output_tokens,
        }
        yield sse(final)
    finally:
        job.cancel()
