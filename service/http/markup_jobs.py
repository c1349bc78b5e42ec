"""Translating HTML and XML documents for the protocols that take them (LibreTranslate's
`format=html`, DeepL's `tag_handling`): the texts of all the request's documents go to the model
as one request, batched together, and come back into their markup (service/markup.py).

A sentence cut by inline tags is a block (service/inline_markup.py): the block's text is one
text, so the model reads the sentence whole, and the text of each of its inline elements goes in
the same batch, to find where the element goes in the block's translation. A block whose elements
cannot be put back exactly is translated run by run, as text between other tags always is, in a
second request after the first: only such blocks pay for it.

The caller is charged for the text it sent, once: the first request holds the blocks and the
runs outside them (the documents' text), and the inline elements' texts and the fallback runs,
which repeat words already charged, are sent uncharged (as an OpenAI prompt's second choice is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from fastapi import Request

from service.errors import InputTooLong
from service.frontdoor import FrontDoor
from service.http.answer import answer
from service.inline_markup import place
from service.jobs import Job
from service.markup import Markup
from service.validation import ALLOWANCE, RawRequest


def prose(documents: list[Markup]) -> list[str]:
    """Each document's text without its markup: what language detection reads."""
    return [" ".join(document.texts) for document in documents]


def whole_texts(document: Markup) -> list[str]:
    """What the document's text is translated as: each block's text in the place of its runs,
    and each run outside the blocks, in document order."""
    starts = {block.runs.start: block.content.text for block in document.blocks}
    inside = {r for block in document.blocks for r in block.runs}
    return [starts.get(r, run) for r, run in enumerate(document.texts) if r in starts or r not in inside]


async def translate_markup(
    request: Request, front: FrontDoor, model: str, documents: list[Markup], target: str, source: str, split: bool
) -> list[str]:
    """The documents translated from `source` into `target`, each text split into sentences when
    `split` (a long paragraph is then no 413)."""
    wholes = [whole_texts(document) for document in documents]
    texts = [text for whole in wholes for text in whole]
    if not texts:  # markup and whitespace only: nothing to translate
        return [document.render([]) for document in documents]
    cap = front.card(model).caps.max_texts
    if cap is not None and len(texts) > cap:  # the cap counts texts: say what the markup's texts are
        raise InputTooLong(
            f"the documents have {len(texts)} texts to translate (the text between tags; a sentence cut by "
            f"inline tags counts once); this server translates at most {cap} at once"
        )
    jobs: list[tuple[list[str], Job]] = []
    known = set(texts)

    def submit(batch: list[str], charged: bool) -> None:
        """`batch` as requests of at most `cap` texts each (the uncharged ones are the server's own)."""
        # a line break in a text run is the document's layout (HTML renders it as a space), not a sentence's end
        size = cap or len(batch) or 1
        uncharged = None if charged else ALLOWANCE.set(None)
        try:
            for part in (batch[i : i + size] for i in range(0, len(batch), size)):
                raw = RawRequest(part, target_lang=target, source_lang=source, split_sentences=split, line_breaks=False)
                jobs.append((part, front.submit(model, raw, request.state.request_id)))
        finally:
            if uncharged is not None:
                ALLOWANCE.reset(uncharged)

    try:
        submit(texts, True)
        # submitted before the first is awaited: the scheduler batches them together; elements nested so
        # deep that their texts pass a cap the documents do not are left out (their blocks go run by run)
        with contextlib.suppress(InputTooLong):
            spans = (s.text for d in documents for b in d.blocks for s in b.content.spans())
            submit(_unique(text for text in spans if text not in known), False)
        answered = [[g.text for g in await answer(request, job)] for _, job in jobs]
        translated = dict(zip(reversed(texts), reversed(answered[0])))  # a text sent twice: its first translation
        translated |= {text: t for (batch, _), ts in zip(jobs[1:], answered[1:]) for text, t in zip(batch, ts)}
        given = iter(answered[0])
        assigned = [_assign(d, [next(given) for _ in whole], translated) for d, whole in zip(documents, wholes)]
        asked = len(jobs)
        missing = (  # the runs of the blocks that could not be put back, not already translated
            d.texts[r] for d, (placed, _) in zip(documents, assigned) for b, block in enumerate(d.blocks)
            if b not in placed for r in block.runs
        )  # fmt: skip
        submit(_unique(t for t in missing if t not in translated), False)
        for batch, job in jobs[asked:]:
            translated |= dict(zip(batch, (g.text for g in await answer(request, job)), strict=True))
    finally:
        for _, job in jobs:
            job.cancel()  # a request that failed or went away: the others are not decoded for nothing
    return [
        d.render([runs[r] if r in runs else translated.get(run, "") for r, run in enumerate(d.texts)], placed)
        for d, (placed, runs) in zip(documents, assigned, strict=True)
    ]


def _assign(
    document: Markup, translations: list[str], inline: dict[str, str]
) -> tuple[dict[int, list[str]], dict[int, str]]:
    """The document's blocks that could be put back (block index -> the text of each of its text
    nodes), and the translations of its runs outside the blocks (run index -> translation)."""
    starts = {block.runs.start: b for b, block in enumerate(document.blocks)}
    inside = {r for block in document.blocks for r in block.runs}
    given = iter(translations)
    placed: dict[int, list[str]] = {}
    runs: dict[int, str] = {}
    for r in range(len(document.texts)):
        if r in starts:
            texts = place(document.blocks[starts[r]], next(given), inline)
            if texts is not None:
                placed[starts[r]] = texts
        elif r not in inside:
            runs[r] = next(given)
    return placed, runs


def _unique(texts: Iterable[str]) -> list[str]:
    """Each text once, in order: the same text would get the same translation."""
    return list(dict.fromkeys(texts))
