"""The HTTP service: a FastAPI app that serves every model directory of a repository.

The app only translates requests into engine calls: it validates and tokenizes on the request
path (`Engine.prepare`, so bad input is answered before it can queue), hands the sequences to the
model's `Scheduler` (service/scheduler.py), and waits for the answer or streams tokens. Every
error, FastAPI's own included, is answered in one JSON shape `{"error": {"type", "message"}}`.

`serve` runs it under uvicorn with heed's shutdown: on SIGTERM readiness turns false, new requests
get 503, requests in flight finish (up to `HEED_SHUTDOWN_GRACE` seconds), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.engine import Generation, Sequence
from service.errors import (
    Cancelled,
    InputTooLong,
    InvalidInput,
    InvalidOptions,
    ModelLoadError,
    Overloaded,
    RequestError,
    UnknownModel,
)
from service.manifest import MANIFEST_FILE, Manifest, load_manifest
from service.metrics import Metrics
from service.options import GenerationOptions
from service.page import install_page
from service.scheduler import Job, Scheduler, TokenStream
from service.schemas import (
    Alignment,
    DecodeRequest,
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
from service.security import Guard, RequestIdFilter, parse_list
from service.settings import Settings

log = logging.getLogger("heed.app")


class WrongTask(RequestError):
    status = 422
    type = "wrong_task"


class Heed:
    """The process's models, schedulers, metrics and lifecycle flags."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.manifests = discover(settings.model_repo)
        self.schedulers = {
            name: Scheduler(directory, manifest, settings, self.metrics)
            for name, (directory, manifest) in self.manifests.items()
        }
        for _, manifest in self.manifests.values():
            self.metrics.add_model(manifest, settings.kv_rows)
        self.defaults = {
            "translate": self._default("translate", settings.default_translate_model),
            "summarize": self._default("summarize", settings.default_summarize_model),
        }
        self.draining = False
        self.in_flight = 0
        self.metrics.ready.set_function(lambda: float(self.ready))

    def _default(self, task: str, configured: str | None) -> str | None:
        if configured is not None:
            if configured not in self.manifests or self.manifests[configured][1].task != task:
                raise ModelLoadError(f"default {task} model {configured!r} is not a {task} model of the repository")
            return configured
        return next((n for n, (_, m) in sorted(self.manifests.items()) if m.task == task), None)

    @property
    def ready(self) -> bool:
        return not self.draining and all(s.ready for s in self.schedulers.values())

    def scheduler(self, name: str | None, task: str | None) -> Scheduler:
        """The scheduler of a request's model (by name, or the task's default); raises for unknown
        models, models of another task and models still loading."""
        if name is None:
            name = self.defaults.get(task)
            if name is None:
                raise UnknownModel(f'this server has no {task} model; name one with "model"')
        if name not in self.schedulers:
            raise UnknownModel(f"unknown model {name!r}; GET /v1/models lists the served models")
        scheduler = self.schedulers[name]
        if task is not None and scheduler.manifest.task != task:
            raise WrongTask(f"model {name!r} is a {scheduler.manifest.task} model; use /v1/{scheduler.manifest.task}")
        if self.draining:
            raise Overloaded("the server is shutting down")
        if not scheduler.ready:
            reason = scheduler.load_error or "still loading"
            raise Overloaded(f"model {name!r} is not ready: {reason}")
        return scheduler

    def begin_drain(self) -> None:
        self.draining = True

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is in flight (or `timeout` passes); runs off the event loop."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.in_flight == 0 and all(s.idle for s in self.schedulers.values()):
                return True
            time.sleep(0.05)
        return False

    def stop(self, grace: float) -> None:
        """Stop every scheduler, sharing one grace period; the rest are answered 503 (blocking)."""
        end = time.monotonic() + grace
        for scheduler in self.schedulers.values():
            scheduler.stop(max(0.0, end - time.monotonic()))


def discover(repo: Path) -> dict[str, tuple[Path, Manifest]]:
    """Every model directory of the repository, by manifest name; refuses bad or duplicate ones."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ModelLoadError(f"model repository {repo} is not a directory")
    found: dict[str, tuple[Path, Manifest]] = {}
    for directory in sorted(p for p in repo.iterdir() if (p / MANIFEST_FILE).is_file()):
        manifest = load_manifest(directory, verify_hashes=False)  # hashes: on the model's thread (Scheduler)
        if manifest.name in found:
            raise ModelLoadError(f"{directory}: model name {manifest.name!r} is also used by {found[manifest.name][0]}")
        found[manifest.name] = (directory, manifest)
    if not found:
        raise ModelLoadError(f"no model directories (with {MANIFEST_FILE}) in {repo}")
    return found


def model_info(scheduler: Scheduler, settings: Settings) -> ModelInfo:
    m = scheduler.manifest
    spec = m.spec
    return ModelInfo(
        name=m.name,
        task=m.task,
        architecture=m.architecture,
        quantization=m.quantization,
        parameters=m.parameters,
        attention={
            "encoder": spec.encoder.attention.model_dump(),
            "decoder": spec.decoder.attention.model_dump(),
            "heads": spec.n_heads,
            "kv_heads": spec.kv_heads,
        },
        dimensions={
            "d_model": spec.d_model,
            "d_ff": spec.d_ff,
            "encoder_layers": spec.encoder.layers,
            "decoder_layers": spec.decoder.layers,
            "vocab_size": spec.vocab_size,
        },
        languages={
            "target": sorted(m.languages.tokens) if m.languages else [],
            "default_target": m.languages.default if m.languages else None,
            "source": list(m.source_languages),
        },
        generation=m.generation.model_dump(),
        limits={
            "max_input_tokens": m.limits.max_input_tokens,
            "max_output_tokens": min(m.limits.max_output_tokens, settings.max_new_tokens),
            "max_beam_size": min(settings.max_beam_size, settings.kv_rows),
            "max_texts": settings.max_texts,
            "kv_rows": settings.kv_rows,
        },
        ready=scheduler.ready,
    )


# -- errors ---------------------------------------------------------------------------------------


def error_response(
    request: Request, status: int, type_: str, message: str, retry_after: int | None = None
) -> JSONResponse:
    """heed's one error shape, with the request's id (set by `Guard`) in the body and the headers:
    Starlette's 500 handler answers from outside the middleware, so the header is set here too."""
    rid = getattr(request.state, "request_id", None)
    headers = {"X-Request-ID": rid} if rid else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    error = {"type": type_, "message": message, "request_id": rid}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed"}
ERROR_RESPONSES = {code: {"model": ErrorResponse} for code in (404, 413, 422, 503, 504)}


def describe_validation_error(errors: list[dict]) -> tuple[str, str]:
    """FastAPI's validation errors as heed's (type, message): the deepest error, its field path
    without pydantic's union-member tags (`text.list[str].0` -> `text.0`)."""
    first = max(errors, key=lambda e: len(e["loc"]))
    if first["type"] == "json_invalid":
        return "invalid_input", f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    loc = [str(p) for p in first["loc"][1:] if p not in ("str", "int", "float", "bool") and "[" not in str(p)]
    if not loc:
        return "invalid_input", "the request body must be a JSON object (Content-Type: application/json)"
    kind = "invalid_options" if loc[0] in GenerationOptions.model_fields else "invalid_input"
    return kind, f"field '{'.'.join(loc)}': {first['msg']}"


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError) -> JSONResponse:
        if e.status >= 500 and e.status != 503:
            log.error("request %s answered %d %s: %s", request.state.request_id, e.status, e.type, e.message)
        return error_response(request, e.status, e.type, e.message, settings.retry_after if e.status == 503 else None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, *describe_validation_error(e.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        if e.status_code == 400:  # FastAPI could not parse the body: bad JSON, answered like the rest of it
            message = "the body is not JSON heed can read (invalid UTF-8, nested too deep, or a number too long)"
            return error_response(request, 422, "invalid_input", message)
        return error_response(request, e.status_code, HTTP_ERROR_TYPES.get(e.status_code, "http_error"), str(e.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, "internal_error", "internal server error; the server log has the details")


# -- request accounting ---------------------------------------------------------------------------


class RequestAccounting:
    """ASGI middleware: counts requests in flight (graceful shutdown waits for them) and records
    `heed_requests_total` / `heed_request_duration_seconds` per model and route for the API routes,
    when the response (streamed ones included) has been sent completely."""

    def __init__(self, app: ASGIApp, heed: Heed):
        self.app, self.heed = app, heed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.heed.in_flight += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.heed.in_flight -= 1
            route = scope.get("route")
            if route is not None:
                model = scope.get("state", {}).get("model", "")
                m = self.heed.metrics
                m.requests.labels(model, route.path, str(status)).inc()
                m.request_duration.labels(model, route.path).observe(time.perf_counter() - start)


# -- decoding requests ----------------------------------------------------------------------------


def submit(
    heed: Heed,
    request: Request,
    body: DecodeRequest,
    model: str | None,
    task: str | None,
    inputs: str | list[str],
    stream: bool = False,
    return_alignment: bool = False,
) -> tuple[Scheduler, Job]:
    """Validate and tokenize on the request path, then queue; raises `RequestError`s."""
    arrival = time.monotonic()
    scheduler = heed.scheduler(model, task)
    request.state.model = scheduler.name
    texts = [inputs] if isinstance(inputs, str) else inputs
    if len(texts) > heed.settings.max_texts:
        raise InputTooLong(f"{len(texts)} texts in one request; this server takes at most {heed.settings.max_texts}")
    chars = sum(len(t) for t in texts)
    if chars > heed.settings.max_input_chars:
        raise InputTooLong(f"{chars} characters of input; this server takes at most {heed.settings.max_input_chars}")
    if stream and len(texts) != 1:
        raise InvalidInput('"stream": true takes exactly one input text')
    sources = scheduler.manifest.source_languages
    if body.source_lang is not None and sources and body.source_lang not in sources:
        raise InvalidOptions(f"source_lang {body.source_lang!r} is not one of this model's: {', '.join(sources)}")
    options = GenerationOptions(**{name: getattr(body, name) for name in GenerationOptions.model_fields})
    tokens = (
        TokenStream(asyncio.get_running_loop(), scheduler.engine.codec.decode, scheduler.outbox) if stream else None
    )
    sequences = scheduler.engine.prepare(
        texts,
        options,
        body.target_lang,
        body.truncate,
        on_token=tokens.on_token if tokens else None,
        return_alignment=return_alignment,
    )
    timeout = min(body.timeout or heed.settings.request_timeout, heed.settings.request_timeout)
    return scheduler, scheduler.submit(sequences, arrival + timeout, tokens, request.state.request_id)


async def answer(request: Request, scheduler: Scheduler, job: Job) -> list[Generation]:
    """Wait for a job; a client that goes away cancels it (its rows are freed at the next step).

    The body has been read, so the ASGI server's `receive()` completes only when the client
    disconnects (or the response is sent): one wait per request, where polling `is_disconnected`
    every 0.25 s cost the event loop 4 ms of CPU per request at 64 clients."""
    gone = asyncio.ensure_future(request.receive())
    try:
        while not job.future.done():
            await asyncio.wait([job.future, gone], return_when=asyncio.FIRST_COMPLETED)
            if job.future.done():
                break
            if gone.result()["type"] == "http.disconnect":
                scheduler.cancel(job)
                raise Cancelled("the client disconnected")
            gone = asyncio.ensure_future(request.receive())  # not a disconnect: keep listening
    except asyncio.CancelledError:
        scheduler.cancel(job)
        raise
    finally:
        gone.cancel()
    outcome = job.future.result()
    if isinstance(outcome, RequestError):
        raise outcome
    return outcome


def sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def event_stream(scheduler: Scheduler, job: Job) -> AsyncIterator[str]:
    """Token events, then one final event with the full text and finish_reason (or an error
    event). If the client disconnects, Starlette cancels this generator: the job is cancelled."""
    try:
        queue, ended = job.stream.queue, False
        while not ended:
            events = [await queue.get()]
            while not queue.empty():  # tokens that arrived together leave in one write
                events.append(queue.get_nowait())
            ended = events[-1] is None
            tokens = events[:-1] if ended else events
            if tokens:
                yield "".join(sse({"token": {"id": e.token_id, "text": e.text}}) for e in tokens)
        outcome = job.future.result()
        if isinstance(outcome, RequestError):
            error = {"type": outcome.type, "message": outcome.message, "request_id": job.request_id}
            yield sse({"error": error}, event="error")
            return
        g = outcome[0]
        yield sse(
            {
                "done": True,
                "text": g.text,
                "finish_reason": g.finish_reason,
                "token_ids": g.token_ids,
                "input_tokens": g.input_tokens,
                "output_tokens": g.output_tokens,
            }
        )
    finally:
        if not job.future.done():
            scheduler.cancel(job)


def outputs(results: list[Generation]) -> tuple[list[Output], Usage]:
    usage = Usage(
        input_tokens=sum(r.input_tokens for r in results), output_tokens=sum(r.output_tokens for r in results)
    )
    return [Output(**_fields(r)) for r in results], usage


def alignment(scheduler: Scheduler, sequence: Sequence) -> Alignment:
    """A finished sequence's alignment with the token strings that label its columns and rows."""
    codec, result = scheduler.engine.codec, sequence.result
    return Alignment(
        source_tokens=codec.tokens(sequence.input_ids),
        target_tokens=codec.tokens(result.token_ids),
        weights=result.alignment or [],
    )


def _fields(r: Generation) -> dict:
    return {
        "text": r.text,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "finish_reason": r.finish_reason,
    }


# -- the app --------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; model manifests are validated now (a bad repository fails here), the
    ONNX sessions load and warm up on each model's scheduler thread after startup."""
    settings = settings or Settings()
    heed = Heed(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for scheduler in heed.schedulers.values():
            scheduler.start()
        yield
        heed.begin_drain()
        await asyncio.to_thread(heed.stop, settings.shutdown_grace)

    app = FastAPI(
        title="heed",
        summary="Translation and summarization with Transformer models on ONNX Runtime",
        lifespan=lifespan,
    )
    app.state.heed = heed
    app.add_middleware(RequestAccounting, heed=heed)
    app.add_middleware(
        Guard,
        keys=parse_list(settings.api_keys.get_secret_value() if settings.api_keys else None),
        max_body_bytes=settings.max_body_bytes,
    )
    if settings.cors_origins:  # off unless configured: browsers may not call heed from other origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=parse_list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    install_error_handlers(app, settings)
    install_page(app)

    @app.get("/healthz", summary="liveness")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="readiness: every model loaded and warmed, not shutting down")
    async def readyz() -> JSONResponse:
        models = {name: s.ready for name, s in heed.schedulers.items()}
        if heed.ready:
            return JSONResponse({"status": "ready", "models": models})
        status = "draining" if heed.draining else "loading"
        return JSONResponse({"status": status, "models": models}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(heed.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        models = [model_info(heed.schedulers[n], settings) for n in sorted(heed.schedulers)]
        return ModelList(models=models, defaults={task: name for task, name in heed.defaults.items() if name})

    @app.get("/v1/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
    async def get_model(name: str, request: Request) -> ModelInfo:
        if name not in heed.schedulers:
            raise UnknownModel(f"unknown model {name!r}; GET /v1/models lists the served models")
        request.state.model = name
        return model_info(heed.schedulers[name], settings)

    @app.post(
        "/v1/translate", response_model=TranslateResponse, response_model_exclude_none=True, responses=ERROR_RESPONSES
    )
    async def translate(body: TranslateRequest, request: Request) -> TranslateResponse:
        with_alignment = body.return_alignment
        scheduler, job = submit(heed, request, body, body.model, "translate", body.text, False, with_alignment)
        _, usage = outputs(await answer(request, scheduler, job))
        translations = [
            Translation(**_fields(s.result), alignment=alignment(scheduler, s) if with_alignment else None)
            for s in job.sequences
        ]
        return TranslateResponse(model=scheduler.name, translations=translations, usage=usage)

    @app.post("/v1/summarize", response_model=SummarizeResponse, responses=ERROR_RESPONSES)
    async def summarize(body: TextRequest, request: Request) -> SummarizeResponse:
        scheduler, job = submit(heed, request, body, body.model, "summarize", body.text)
        summaries, usage = outputs(await answer(request, scheduler, job))
        return SummarizeResponse(model=scheduler.name, summaries=summaries, usage=usage)

    @app.post(
        "/v1/generate",
        response_model=GenerateResponse,
        responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
    )
    async def generate(body: GenerateRequest, request: Request):
        scheduler, job = submit(heed, request, body, body.model, None, body.input, stream=body.stream)
        if body.stream:
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(event_stream(scheduler, job), media_type="text/event-stream", headers=headers)
        results = await answer(request, scheduler, job)
        _, usage = outputs(results)
        generations = [GenerationOutput(**_fields(r), token_ids=r.token_ids) for r in results]
        return GenerateResponse(model=scheduler.name, generations=generations, usage=usage)

    return app


# -- running under uvicorn ------------------------------------------------------------------------


class GracefulServer(uvicorn.Server):
    """uvicorn with heed's SIGTERM: drain first (not ready, new requests 503, in-flight ones
    finish, up to the grace period), then uvicorn's own shutdown. A second signal stops at once.
    The signal is handled, not re-raised, so the process exits 0."""

    def __init__(self, config: uvicorn.Config, heed: Heed):
        super().__init__(config)
        self.heed = heed

    def handle_exit(self, sig: int, frame) -> None:
        if self.heed.draining:
            self.should_exit = self.force_exit = True
            return
        log.info("signal %d: draining (grace %.0fs)", sig, self.heed.settings.shutdown_grace)
        self.heed.begin_drain()
        threading.Thread(target=self._drain, name="heed-drain", daemon=True).start()

    def _drain(self) -> None:
        if not self.heed.wait_idle(self.heed.settings.shutdown_grace):
            log.warning("grace period over with requests in flight; they are answered 503")
        self.heed.stop(0)  # answers what is left, so that uvicorn's wait for open connections ends
        self.should_exit = True


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        access_log=False,
        timeout_keep_alive=settings.keep_alive,
    )
    server = GracefulServer(config, app.state.heed)
    server.run()
    return 0 if server.started else 1
