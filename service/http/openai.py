"""OpenAI's API (`/v1/completions`, `/v1/chat/completions`; `/v1/models` is shared with heed's
own), so that the tools that speak it (the official `openai` clients, LangChain, ...) work
unchanged, with decoder-only and seq2seq models alike: a translation model completes a prompt
with its translation.

Each choice is its own job, so that streamed and whole answers decode the same way and a seed
gives the same choices in both (choice `k` is seeded `seed + k`); the jobs of one request run in
the same batches. Field rules: service/http/openai_options.py. Errors are OpenAI's
`{"error": {"message", "type", "param", "code"}}` (with heed's `request_id`); a request the model
cannot take is a 400, as OpenAI's context-length errors are.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service.errors import InputTooLong, RequestError
from service.frontdoor import FrontDoor
from service.http.answer import answer
from service.http.errors import ERROR_RESPONSES, ErrorStyle
from service.http.openai_options import (
    chat_messages,
    error_body,
    finish_reason,
    generation_options,
    languages,
    prompts,
    refuse_unsupported,
    usage,
)
from service.http.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from service.http.openai_stream import Choice, stream_choices
from service.http.sse import SSE_HEADERS
from service.results import Generation
from service.validation import ALLOWANCE, RawRequest

PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})


def _status(status: int) -> int:
    """heed's statuses as OpenAI's clients sort them: a request the model cannot take is a 400."""
    return {413: 400, 422: 400}.get(status, status)


ERROR_STYLE = ErrorStyle(PATHS, _status, error_body)


def openai_routes(front: FrontDoor) -> APIRouter:
    router = APIRouter(tags=["OpenAI"])

    def submit_choices(
        request: Request, body: SamplingFields, texts: list[str], max_tokens: int | None, special_tokens: bool = True
    ) -> list[Choice]:
        """One job per choice, `n` per text; cancels those already queued if one is refused.
        `special_tokens`: whether the tokenizer adds its own (BOS) to the text; a rendered chat
        template holds them already, as transformers' `apply_chat_template` counts on."""
        model = front.model_for(body.model, None)
        request.state.model = model
        refuse_unsupported(body)
        caps = front.card(model).caps
        if caps.max_texts is not None and len(texts) * body.n > caps.max_texts:
            raise InputTooLong(
                f"{len(texts)} prompts x n={body.n}: this server decodes at most {caps.max_texts} at once"
            )
        options, langs = generation_options(body, max_tokens), languages(body)
        choices: list[Choice] = []
        try:
            for p, text in enumerate(texts):
                for k in range(body.n):
                    index = p * body.n + k
                    seeded = (
                        options.model_copy(update={"seed": (options.seed + index) % 2**63})
                        if options.seed is not None
                        else options
                    )
                    raw = RawRequest([text], seeded, stream=body.stream, special_tokens=special_tokens, **langs)
                    # a prompt's n choices are one text sent: its characters are charged with the first
                    uncharged = ALLOWANCE.set(None) if k else None
                    try:
                        choices.append(Choice(index, k == 0, front.submit(model, raw, request.state.request_id)))
                    finally:
                        if uncharged is not None:
                            ALLOWANCE.reset(uncharged)
        except RequestError:
            for choice in choices:
                choice.job.cancel()
            raise
        return choices

    async def outcomes(request: Request, choices: list[Choice]) -> list[Generation]:
        try:
            return [(await answer(request, choice.job))[0] for choice in choices]
        finally:
            for choice in choices:
                choice.job.cancel()  # a no-op for jobs that ended; frees the others if one failed

    def envelope(request: Request, kind: str, model: str) -> dict:
        prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
        return {
            "id": f"{prefix}-{request.state.request_id}",
            "object": kind,
            "created": int(time.time()),
            "model": model,
        }

    def totals(choices: list[Choice], results: list[Generation]) -> dict:
        prompt = sum(r.input_tokens for c, r in zip(choices, results, strict=True) if c.counts_prompt)
        return usage(prompt, sum(r.output_tokens for r in results))

    @router.post("/v1/completions", summary="OpenAI: complete prompts", responses=ERROR_RESPONSES)
    async def completions(body: CompletionRequest, request: Request):
        texts = prompts(body)
        choices = submit_choices(request, body, texts, body.max_tokens)
        echoes = {c.index: texts[c.index // body.n] if body.echo else "" for c in choices}
        head = envelope(request, "text_completion", body.model)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = stream_choices(choices, head, chat=False, echoes=echoes, include_usage=include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        results = await outcomes(request, choices)
        answered = [
            {
                "index": c.index,
                "text": echoes[c.index] + r.text,
                "logprobs": None,
                "finish_reason": finish_reason(r.finish_reason),
            }
            for c, r in zip(choices, results, strict=True)
        ]
        return JSONResponse(head | {"choices": answered, "usage": totals(choices, results)})

    @router.post("/v1/chat/completions", summary="OpenAI: answer a conversation", responses=ERROR_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        model = front.model_for(body.model, None)
        prompt = front.chat_prompt(model, chat_messages(body))
        max_tokens = body.max_completion_tokens or body.max_tokens
        choices = submit_choices(request, body, [prompt], max_tokens, special_tokens=False)
        head = envelope(request, "chat.completion", body.model)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = stream_choices(
                choices, head | {"object": "chat.completion.chunk"}, chat=True, include_usage=include_usage
            )
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        results = await outcomes(request, choices)
        answered = [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": None,
                "finish_reason": finish_reason(r.finish_reason),
            }
            for c, r in zip(choices, results, strict=True)
        ]
        return JSONResponse(head | {"choices": answered, "usage": totals(choices, results)})

    return router
