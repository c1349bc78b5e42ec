"""LibreTranslate's API (`/translate`, `/languages`, `/detect`), for the clients that speak it.

Fields come as LibreTranslate's clients send them: a JSON body, a form-encoded body, or the query
string (the body's fields win). The model is the translate model whose languages cover the pair
(`FrontDoor.translation_model`); `source` `auto` detects the language first, as LibreTranslate
does: each text of a list over `ALONE` characters alone, shorter ones (too short to tell) as the
request's texts together; texts of different languages go to their own models. `format` `html`
translates the text of HTML documents and keeps their markup (service/markup.py). Errors are
LibreTranslate's `{"error": message}`, with its status codes: 400 for a bad request, 403 for a
bad API key (`api_key` in the body or the query, or the bearer header; `/languages` needs none),
429 for a key over its request rate or character quota (service/http/quotas.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.errors import InvalidInput
from service.frontdoor import FrontDoor
from service.http.answer import answer
from service.http.errors import ErrorStyle
from service.http.field_schemas import LIBRETRANSLATE_DETECT, LIBRETRANSLATE_TRANSLATE
from service.http.fields import read_fields
from service.http.markup_jobs import prose, translate_markup
from service.languages import Detection, name
from service.markup import parse
from service.options import GenerationOptions
from service.validation import RawRequest

PATHS = frozenset({"/translate", "/languages", "/detect"})
OPEN_PATHS = frozenset({"/languages"})  # LibreTranslate asks no key for it
FORMATS = ("text", "html")  # html: each q is an HTML document or fragment, answered with its markup kept
ALONE = 40  # characters of text from which a list's item is detected on its own (LibreTranslate's rule)


def _status(status: int) -> int:
    if status == 401:
        return 403
    return 400 if 400 <= status < 500 and status != 429 else status


ERROR_STYLE = ErrorStyle(PATHS, _status, lambda type_, message, request_id: {"error": message})


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


def detections(front: FrontDoor, texts: list[str]) -> list[Detection]:
    """Each text's language (`ALONE`): a short one takes what all of them together read as."""
    together = front.detect("\n".join(texts))[0] if any(len(t) <= ALONE for t in texts) else None
    return [front.detect(text)[0] if len(text) > ALONE else together for text in texts]


def libretranslate_routes(front: FrontDoor) -> APIRouter:
    router = APIRouter(tags=["LibreTranslate"])

    @router.post(
        "/translate",
        summary="LibreTranslate: translate q (text or HTML) from source to target",
        openapi_extra=LIBRETRANSLATE_TRANSLATE,
    )
    async def translate(request: Request) -> JSONResponse:
        fields = await read_fields(request)
        q, source, target = required(fields, "q"), required(fields, "source"), required(fields, "target")
        texts = q if isinstance(q, list) else [q]
        if not all(isinstance(text, str) for text in texts):
            raise InvalidInput("Invalid request: q must be a string or a list of strings")
        text_format = fields.get("format") or "text"
        if text_format not in FORMATS:
            raise InvalidInput(f"{text_format} format is not supported")
        alternatives = count(fields.get("alternatives"), "alternatives")
        # HTML: each item is a document; its text runs are translated and put back into its markup
        documents = [parse(text, "html") for text in texts] if text_format == "html" else None
        read = prose(documents) if documents else texts  # what is detected: the text, not its markup
        detected = detections(front, read) if source == "auto" else None
        by_source: dict[str, list[int]] = {}  # the texts of each source language, in order
        for i in range(len(texts)):
            by_source.setdefault(detected[i].language if detected else source, []).append(i)
        translated, others = [""] * len(texts), [[] for _ in texts]  # as LibreTranslate: no alternatives for HTML
        for source_code, items in by_source.items():
            model, target_code = front.translation_model(source_code, target)
            request.state.model = model
            if documents:
                picked = [documents[i] for i in items]
                done = await translate_markup(request, front, model, picked, target_code, source_code, True)
            else:
                # the n best of a beam search one wider than the alternatives asked for
                n_best = GenerationOptions(beam_size=alternatives + 1, num_return_sequences=alternatives + 1)
                options = n_best if alternatives else GenerationOptions()
                raw = RawRequest([texts[i] for i in items], options, target_code, source_code, split_sentences=True)
                generations = await answer(request, front.submit(model, raw, request.state.request_id))
                done = [g.text for g in generations]
                for i, g in zip(items, generations):
                    others[i] = g.alternatives
            for i, text in zip(items, done):
                translated[i] = text
        body: dict[str, Any] = {"translatedText": translated if isinstance(q, list) else translated[0]}
        if alternatives:
            body["alternatives"] = others if isinstance(q, list) else others[0]
        if detected:
            found = [detection(d) for d in detected]
            body["detectedLanguage"] = found if isinstance(q, list) else found[0]
        return JSONResponse(body)

    @router.api_route("/languages", methods=["GET", "POST"], summary="LibreTranslate: the language pairs")
    async def languages() -> list[dict]:
        return [{"code": s, "name": name(s), "targets": targets} for s, targets in front.language_pairs().items()]

    @router.post("/detect", summary="LibreTranslate: the language of q", openapi_extra=LIBRETRANSLATE_DETECT)
    async def detect(request: Request) -> list[dict]:
        q = required(await read_fields(request), "q")
        if not isinstance(q, str):
            raise InvalidInput("Invalid request: q must be a string")
        return [detection(d) for d in front.detect(q)]

    return router
