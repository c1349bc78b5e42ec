"""Liveness, readiness and Prometheus metrics: the routes orchestrators and scrapers call."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.frontdoor import FrontDoor
from service.metrics import Metrics


def probe_routes(front: FrontDoor, metrics: Metrics) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", summary="liveness")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz", summary="readiness: every model loaded and warmed, not shutting down")
    async def readyz() -> JSONResponse:
        models = {name: front.card(name).ready for name in front.names}
        if front.ready:
            return JSONResponse({"status": "ready", "models": models})
        status = "draining" if front.draining else "loading"
        return JSONResponse({"status": status, "models": models}, status_code=503)

    @router.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
