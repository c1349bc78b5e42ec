"""Translating HTML and XML documents for the protocols that take them (LibreTranslate's
`format=html`, DeepL's `tag_handling`): the text runs of all the request's documents go to the
model as one request, batched together, and come back into their markup (service/markup.py)."""

from __future__ import annotations

from fastapi import Request

from service.errors import InputTooLong
from service.frontdoor import FrontDoor
from service.http.answer import answer
from service.markup import Markup
from service.validation import RawRequest


def prose(documents: list[Markup]) -> list[str]:
    """Each document's text without its markup: what language detection reads."""
    return [" ".join(document.texts) for document in documents]


async def translate_markup(
    request: Request, front: FrontDoor, model: str, documents: list[Markup], target: str, source: str, split: bool
) -> list[str]:
    """The documents with their runs translated from `source` into `target`: each run a text of its
    own, split into sentences when `split` (a long paragraph is then no 413)."""
    runs = [run for document in documents for run in document.texts]
    if not runs:  # markup and whitespace only: nothing to translate
        return [document.render([]) for document in documents]
    cap = front.card(model).caps.max_texts
    if cap is not None and len(runs) > cap:  # the cap counts texts: say that these are the markup's runs
        raise InputTooLong(
            f"the documents have {len(runs)} text runs (the text between tags); "
            f"this server translates at most {cap} at once"
        )
    # a line break in a text run is the document's layout (HTML renders it as a space), not a sentence's end
    raw = RawRequest(runs, target_lang=target, source_lang=source, split_sentences=split, line_breaks=False)
    generations = iter(await answer(request, front.submit(model, raw, request.state.request_id)))
    return [document.render([next(generations).text for _ in document.texts]) for document in documents]
