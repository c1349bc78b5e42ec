"""The FastAPI app: the front door, its middleware and error handlers, and the routes.

Middleware, outermost first: CORS (only when configured), accounting (request id, access log,
metrics, requests in flight), the guard (connection cap, API keys and their limits, body size and
time). Model manifests are validated when the app is built (a bad repository fails here); the ONNX
sessions load and warm up on each model's worker thread after startup.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.frontdoor import FrontDoor
from service.http import deepl, libretranslate, openai
from service.http.accounting import Accounting, InFlight
from service.http.connections import Connections
from service.http.errors import ErrorStyles, install_error_handlers
from service.http.guard import Guard
from service.http.native import native_routes
from service.http.page import install_page
from service.http.probes import probe_routes
from service.http.quotas import KeyRing
from service.metrics import Metrics
from service.settings import Settings
from service.tracing import request_tracer

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


def create_app(settings: Settings | None = None, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """`tracer_provider` replaces the OTLP exporter of the request traces (service/tracing.py)."""
    settings = settings or Settings()
    metrics = Metrics()
    front = FrontDoor(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        front.start()
        yield
        front.begin_drain()
        await asyncio.to_thread(front.stop, settings.shutdown_grace)

    app = FastAPI(
        title="heed",
        summary="Translation and summarization with Transformer models on ONNX Runtime",
        lifespan=lifespan,
    )
    app.state.front, app.state.in_flight = front, InFlight()
    app.state.connections = Connections(settings.max_connections)  # counted by `heed serve`'s protocol
    app.state.error_styles = ErrorStyles([libretranslate.ERROR_STYLE, deepl.ERROR_STYLE, openai.ERROR_STYLE])
    app.add_middleware(
        Guard,
        ring=KeyRing.from_settings(settings),
        max_body_bytes=settings.max_body_bytes,
        styles=app.state.error_styles,
        connections=app.state.connections,
        read_timeout=settings.read_timeout,
        retry_after=settings.retry_after,
        open_paths=libretranslate.OPEN_PATHS,
        key_field_paths=libretranslate.PATHS,  # its clients send `api_key` as a field (DeepL's: the header only)
    )
    api_paths = libretranslate.PATHS | deepl.PATHS  # counted in the metrics, like /v1/
    tracer = request_tracer(settings.otlp_endpoint, tracer_provider)
    app.add_middleware(Accounting, metrics=metrics, in_flight=app.state.in_flight, api_paths=api_paths, tracer=tracer)
    if settings.cors_origins:  # off unless configured: browsers may not call heed from other origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    install_error_handlers(app, settings.retry_after)
    install_page(app)
    app.include_router(probe_routes(front, metrics))
    app.include_router(native_routes(front))
    app.include_router(libretranslate.libretranslate_routes(front))
    app.include_router(deepl.deepl_routes(front))
    app.include_router(openai.openai_routes(front))
    return app
