"""heed's native API: /v1/models, /v1/translate, /v1/summarize and /v1/generate.

Each route maps its body to a `RawRequest`, submits it through the front door and shapes the
job's answer; the request's options sit at the top level of the body (service/http/schemas.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from service.frontdoor import FrontDoor, ModelCard
from service.http.answer import answer
from service.http.errors import ERROR_RESPONSES
from service.http.schemas import (
    Alignment,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    GenerationOutput,
    ModelInfo,
    ModelList,
    Output,
    SummarizeResponse,
    TextRequest,
    TranslateRequest,
    TranslateResponse,
    Translation,
    Usage,
)
from service.http.sse import SSE_HEADERS, native_events
from service.jobs import Job
from service.languages import name
from service.manifest import Manifest
from service.options import GenerationOptions
from service.results import Generation
from service.validation import RawRequest


def submit(front: FrontDoor, request: Request, body: TextRequest | GenerateRequest, task: str | None, **fields) -> Job:
    """Map a native body (and the route's own `fields` of `RawRequest`) to the front door."""
    name = front.model_for(body.model, task)
    request.state.model = name  # the metrics' model label, also when the request is refused below
    inputs = body.text if isinstance(body, TextRequest) else body.input
    texts = [inputs] if isinstance(inputs, str) else inputs
    if task == "summarize":  # a decoder-only model reads them inside its prompt
        texts, fields["special_tokens"] = front.summary_prompts(name, texts)
    raw = RawRequest(
        texts,
        GenerationOptions(**{option: getattr(body, option) for option in GenerationOptions.model_fields}),
        target_lang=body.target_lang,
        source_lang=body.source_lang,
        truncate=body.truncate,
        timeout=body.timeout,
        **fields,
    )
    return front.submit(name, raw, request.state.request_id)


def usage(results: list[Generation]) -> Usage:
    return Usage(input_tokens=sum(r.input_tokens for r in results), output_tokens=sum(r.output_tokens for r in results))


def output_fields(r: Generation) -> dict:
    return {
        "text": r.text,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "finish_reason": r.finish_reason,
        "alternatives": r.alternatives or None,
    }


def translation(r: Generation) -> Translation:
    a = r.alignment
    alignment = (
        Alignment(source_tokens=a.source_tokens, target_tokens=a.target_tokens, weights=a.weights) if a else None
    )
    return Translation(**output_fields(r), alignment=alignment)


def model_info(card: ModelCard) -> ModelInfo:
    m, spec, limits = card.manifest, card.manifest.spec, card.limits
    return ModelInfo(
        id=m.name,
        created=card.created,
        name=m.name,
        task=m.task,
        architecture=m.architecture,
        quantization=m.quantization,
        parameters=m.parameters,
        attention={
            "encoder": spec.encoder.attention.model_dump() if spec.encoder else None,  # None: decoder-only
            "decoder": spec.decoder.attention.model_dump(),
            "heads": spec.n_heads,
            "kv_heads": spec.kv_heads,
        },
        dimensions={
            "d_model": spec.d_model,
            "d_ff": spec.d_ff,
            "encoder_layers": spec.encoder.layers if spec.encoder else 0,
            "decoder_layers": spec.decoder.layers,
            "vocab_size": spec.vocab_size,
        },
        languages=languages(m),
        generation=m.generation.model_dump(),
        limits={
            "max_input_tokens": limits.max_input_tokens,
            "max_output_tokens": limits.max_output_tokens,
            "max_beam_size": limits.max_beam_size,
            "max_texts": card.caps.max_texts,
            "kv_rows": limits.kv_rows,
        },
        ready=card.ready,
    )


def languages(m: Manifest) -> dict:
    """Codes as the model spells them (requests may also name them as service/languages.py
    matches), and each code with a name a client can show."""
    targets = sorted(m.languages.tokens) if m.languages else []
    sources = list(m.source_languages)
    return {
        "target": targets,
        "default_target": m.languages.default if m.languages else None,
        "source": sources,
        "default_source": m.languages.default_source if m.languages else None,
        "names": {code: name(code) for code in sorted({*targets, *sources})},
    }


def native_routes(front: FrontDoor) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        models = [model_info(front.card(name)) for name in front.names]
        defaults = {task: name for task, name in front.defaults.items() if name}
        return ModelList(data=models, models=models, defaults=defaults)

    @router.get("/v1/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
    async def get_model(name: str, request: Request) -> ModelInfo:
        card = front.card(name)
        request.state.model = name
        return model_info(card)

    @router.post(
        "/v1/translate", response_model=TranslateResponse, response_model_exclude_none=True, responses=ERROR_RESPONSES
    )
    async def translate(body: TranslateRequest, request: Request) -> TranslateResponse:
        split = body.split_sentences if body.split_sentences is not None else not body.return_alignment
        job = submit(front, request, body, "translate", return_alignment=body.return_alignment, split_sentences=split)
        results = await answer(request, job)
        return TranslateResponse(model=job.model, translations=[translation(r) for r in results], usage=usage(results))

    @router.post(
        "/v1/summarize", response_model=SummarizeResponse, response_model_exclude_none=True, responses=ERROR_RESPONSES
    )
    async def summarize(body: TextRequest, request: Request) -> SummarizeResponse:
        job = submit(front, request, body, "summarize")
        results = await answer(request, job)
        summaries = [Output(**output_fields(r)) for r in results]
        return SummarizeResponse(model=job.model, summaries=summaries, usage=usage(results))

    @router.post(
        "/v1/generate",
        response_model=GenerateResponse,
        response_model_exclude_none=True,
        responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
    )
    async def generate(body: GenerateRequest, request: Request):
        job = submit(front, request, body, None, stream=body.stream)
        if body.stream:
            return StreamingResponse(native_events(job), media_type="text/event-stream", headers=SSE_HEADERS)
        results = await answer(request, job)
        generations = [GenerationOutput(**output_fields(r), token_ids=r.token_ids) for r in results]
        return GenerateResponse(model=job.model, generations=generations, usage=usage(results))

    return router
