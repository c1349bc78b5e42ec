"""LibreTranslate's API (`/translate`, `/languages`, `/detect`), for the clients that speak it.

Fields come as LibreTranslate's clients send them: a JSON body, a form-encoded body, or the query
string (the body's fields win). The model is the translate model whose languages cover the pair
(`FrontDoor.translation_model`); `source` `auto` detects the language first. Errors are
LibreTranslate's `{"error": message}`, with its status codes: 400 for a bad request, 403 for a
bad API key (`api_key` in the body or the query, or the bearer header; `/languages` needs none).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.errors import InvalidInput
from service.frontdoor import FrontDoor
from service.http.answer import answer
from service.http.errors import ErrorStyle
from service.languages import Detection, name
from service.options import GenerationOptions
from service.validation import RawRequest

PATHS = frozenset({"/translate", "/languages", "/detect"})
OPEN_PATHS = frozenset({"/languages"})  # LibreTranslate asks no key for it


def _status(status: int) -> int:
    if status == 401:
        return 403
    return 400 if 400 <= status < 500 else status


ERROR_STYLE = ErrorStyle(PATHS, _status, lambda type_, message, request_id: {"error": message})


async def read_fields(request: Request) -> dict[str, Any]:
    """The request's fields: the query string's, then the body's (JSON or form) over them."""
    fields: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            raise InvalidInput(f"Invalid request: the body is not valid JSON ({e})") from e
        if not isinstance(body, dict):
            raise InvalidInput("Invalid request: the body must be a JSON object")
        fields |= body
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields |= {key: value for key, value in (await request.form()).items() if isinstance(value, str)}
    return fields


def required(fields: dict[str, Any], field: str) -> Any:
    value = fields.get(field)
    if not value:
        raise InvalidInput(f"Invalid request: missing {field} parameter")
    return value


def count(value: Any, field: str) -> int:
    try:
        number = int(value or 0)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise InvalidInput(f"Invalid request: {field} must be a number >= 0")
    return number


def detection(d: Detection) -> dict:
    return {"confidence": round(100 * d.confidence, 1), "language": d.language}


def libretranslate_routes(front: FrontDoor) -> APIRouter:
    router = APIRouter(tags=["LibreTranslate"])

    @router.post("/translate", summary="LibreTranslate: translate q from source to target")
    async def translate(request: Request) -> JSONResponse:
        fields = await read_fields(request)
        q, source, target = required(fields, "q"), required(fields, "source"), required(fields, "target")
        texts = q if isinstance(q, list) else [q]
        if not all(isinstance(text, str) for text in texts):
            raise InvalidInput("Invalid request: q must be a string or a list of strings")
        text_format = fields.get("format") or "text"
        if text_format != "text":
            raise InvalidInput(f"{text_format} format is not supported by this server yet (only text)")
        alternatives = count(fields.get("alternatives"), "alternatives")
        detected = [front.detect(text)[0] for text in texts] if source == "auto" else None
        source_code = detected[0].language if detected else source
        model, target_code = front.translation_model(source_code, target)
        request.state.model = model
        # the n best of a beam search one wider than the alternatives asked for
        n_best = GenerationOptions(beam_size=alternatives + 1, num_return_sequences=alternatives + 1)
        options = n_best if alternatives else GenerationOptions()
        raw = RawRequest(texts, options, target_code, source_code, split_sentences=True)
        job = front.submit(model, raw, request.state.request_id)
        generations = await answer(request, job)
        translated = [g.text for g in generations]
        body: dict[str, Any] = {"translatedText": translated if isinstance(q, list) else translated[0]}
        if alternatives:
            others = [g.alternatives for g in generations]
            body["alternatives"] = others if isinstance(q, list) else others[0]
        if detected:
            found = [detection(d) for d in detected]
            body["detectedLanguage"] = found if isinstance(q, list) else found[0]
        return JSONResponse(body)

    @router.api_route("/languages", methods=["GET", "POST"], summary="LibreTranslate: the language pairs")
    async def languages() -> list[dict]:
        return [{"code": s, "name": name(s), "targets": targets} for s, targets in front.language_pairs().items()]

    @router.post("/detect", summary="LibreTranslate: the language of q")
    async def detect(request: Request) -> list[dict]:
        q = required(await read_fields(request), "q")
        if not isinstance(q, str):
            raise InvalidInput("Invalid request: q must be a string")
        return [detection(d) for d in front.detect(q)]

    return router
