"""The one error builder: every error heed answers, from a route, the guard, a validation
failure or an SSE stream, is built here. heed's own shape is `{"error": {"type", "message",
"request_id"}}`; a protocol whose clients expect another (LibreTranslate's `{"error": message}`)
registers an `ErrorStyle` for its paths, with its own status codes. Messages may quote what the
client sent; characters that have no UTF-8 form (lone surrogates from JSON escapes) are written as
escapes, so that no error answer fails to encode."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.errors import RequestError
from service.http.schemas import ErrorResponse
from service.options import GenerationOptions

log = logging.getLogger("heed.http")

HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed"}
ERROR_RESPONSES = {code: {"model": ErrorResponse} for code in (404, 413, 422, 503, 504)}


def error_body(type_: str, message: str, request_id: str | None) -> dict:
    return {"error": {"type": type_, "message": message, "request_id": request_id}}


@dataclass(frozen=True)
class ErrorStyle:
    """How the clients of one protocol expect errors: the status for heed's, and the body."""

    paths: frozenset[str] = frozenset()
    status: Callable[[int], int] = lambda status: status
    body: Callable[[str, str, str | None], dict] = error_body
    by_type: Mapping[str, int] = field(default_factory=dict)  # a status for an error type, over `status`


class ErrorStyles:
    """Each path's style; heed's own for every path no protocol claims."""

    def __init__(self, styles: list[ErrorStyle] = ()):
        self._by_path = {path: style for style in styles for path in style.paths}
        self._native = ErrorStyle()

    def build(self, path: str, status: int, type_: str, message: str, request_id: str | None) -> tuple[int, dict]:
        style = self._by_path.get(path, self._native)
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        return style.by_type.get(type_) or style.status(status), style.body(type_, message, request_id)


def error_headers(request_id: str | None, retry_after: int | None = None) -> dict[str, str]:
    """The request id goes in the headers too: Starlette's 500 handler answers from outside the
    middleware that sets it on every other response."""
    headers = {"X-Request-ID": request_id} if request_id else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers


def error_response(
    request: Request, status: int, type_: str, message: str, retry_after: int | None = None
) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    status, body = request.app.state.error_styles.build(request.url.path, status, type_, message, rid)
    return JSONResponse(body, status_code=status, headers=error_headers(rid, retry_after))


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


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError) -> JSONResponse:
        if e.status >= 500 and e.status != 503:
            log.error("request %s answered %d %s: %s", request.state.request_id, e.status, e.type, e.message)
        retry = e.retry_after if e.retry_after is not None else retry_after if e.status == 503 else None
        return error_response(request, e.status, e.type, e.message, retry)

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
