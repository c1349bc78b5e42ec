"""The translation page at `/`: static HTML + JS + CSS files of the `service` package (no CDN, no
build step) that call the public API from the browser: `/v1/models` for the default translation
model's languages, `/v1/translate` with `"return_alignment": true` for the text and its heatmap."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
# route -> (file in STATIC, media type); fixed names, so nothing else on disk is reachable
PAGE = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/static/page.css": ("page.css", "text/css; charset=utf-8"),
}


def _sender(path: Path, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
    async def send() -> FileResponse:
        return FileResponse(path, media_type=media_type)

    return send


def install_page(app: FastAPI) -> None:
    """Add the page's GET routes (kept out of the OpenAPI schema: they are not API)."""
    for route, (name, media_type) in PAGE.items():
        app.add_api_route(route, _sender(STATIC / name, media_type), methods=["GET"], include_in_schema=False)
