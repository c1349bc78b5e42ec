"""OpenAI's streaming: the tokens of every choice of a request as `data: {chunk}` events, in the
order they are decoded, then each choice's `finish_reason`, the usage if asked, and
`data: [DONE]`. An error after the stream has begun is sent as OpenAI sends it, `data:
{"error": ...}` (the official clients raise it), and the stream ends without `[DONE]`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from service.errors import RequestError
from service.http.openai_options import error_body, finish_reason, usage
from service.jobs import Job, TokenEvent


@dataclass(frozen=True)
class Choice:
    index: int  # OpenAI's choice index: prompt * n + k
    counts_prompt: bool  # the first choice of its prompt: the prompt's tokens count once in the usage
    job: Job


def data(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


def _delta(chat: bool, index: int, text: str | None, reason: str | None = None, role: bool = False) -> dict:
    if not chat:
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
    delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}


async def _merged(choices: list[Choice]) -> AsyncIterator[tuple[Choice, list[TokenEvent]]]:
    """Each choice's token events as they arrive, whichever choice they belong to."""
    queue: asyncio.Queue[tuple[Choice, list[TokenEvent]] | None] = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        try:
            async for events in choice.job.tokens():
                await queue.put((choice, events))
        finally:
            await queue.put(None)

    pumps = [asyncio.ensure_future(pump(choice)) for choice in choices]
    try:
        running = len(pumps)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            else:
                yield item
    finally:
        for task in pumps:
            task.cancel()


async def stream_choices(
    choices: list[Choice], head: dict, chat: bool, echoes: dict[int, str] | None = None, include_usage: bool = False
) -> AsyncIterator[str]:
    """The chunks of a streamed completion (`chat`: chat completion chunks); `head` holds the
    fields every chunk repeats (id, object, created, model). Cancels every choice's job if the
    client goes away (Starlette cancels this generator)."""
    try:
        if chat:  # the role first, as OpenAI sends it
            yield data(head | {"choices": [_delta(True, c.index, "", role=True) for c in choices]})
        elif echoes and any(echoes.values()):
            yield data(head | {"choices": [_delta(False, c.index, echoes[c.index]) for c in choices]})
        async for choice, events in _merged(choices):
            text = "".join(event.text for event in events)
            if text:
                yield data(head | {"choices": [_delta(chat, choice.index, text)]})
        prompt_tokens = completion_tokens = 0
        for choice in choices:
            try:
                [generation] = choice.job.outcome()
            except RequestError as e:
                yield data(error_body(e.type, e.message, choice.job.request_id))
                return
            yield data(head | {"choices": [_delta(chat, choice.index, None, finish_reason(generation.finish_reason))]})
            prompt_tokens += generation.input_tokens if choice.counts_prompt else 0
            completion_tokens += generation.output_tokens
        if include_usage:
            yield data(head | {"choices": [], "usage": usage(prompt_tokens, completion_tokens)})
        yield data("[DONE]")
    finally:
        for choice in choices:
            choice.job.cancel()
