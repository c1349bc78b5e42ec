"""Documents translated sentence by sentence, and put back together exactly as they were written.

A translation model is trained on sentences: given a paragraph or several lines at once it
drops or merges them, and a long document is over its input limit. So a text is cut into its
lines and each line into sentences by pysbd (a rule-based segmenter for 23 languages; English
rules for the others), every sentence becomes a sequence of the same batch, and the answer keeps
the text between the sentences (spaces, tabs, line breaks, blank lines) byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pysbd
from pysbd.languages import LANGUAGE_CODES

from service.results import Generation


@dataclass(frozen=True)
class Document:
    sentences: list[str]
    between: list[str]  # the text before each sentence, and after the last: len(sentences) + 1

    def join(self, translations: list[str]) -> str:
        parts = [self.between[0]]
        for translation, after in zip(translations, self.between[1:]):
            parts += [translation, after]
        return "".join(parts)


@cache
def _segmenter(language: str) -> pysbd.Segmenter:
    return pysbd.Segmenter(language=language, clean=False, char_span=True)


LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))  # str.splitlines'


def split(text: str, language: str | None = None, line_breaks: bool = True) -> Document:
    """`text`'s sentences and what lies between them (`language`: the source, if known).
    `line_breaks` False: a line break is a space within a sentence, not its end (DeepL's
    `nonewlines`; HTML's text, where a line break is the source's layout)."""
    language = (language or "en").lower().split("-")[0]
    segmenter = _segmenter(language if language in LANGUAGE_CODES else "en")
    sentences, between, done, start = [], [], 0, 0
    lines = text.splitlines(keepends=True) if line_breaks else [text]
    for line in lines:
        seen = line if line_breaks else line.translate(LINE_BREAKS)  # the same length: spans map back
        for span in segmenter.segment(seen) if line.strip() else ():
            piece = line[span.start : span.end]
            first = start + span.start + len(piece) - len(piece.lstrip())
            last = start + span.end - (len(piece) - len(piece.rstrip()))
            if first < last:
                between.append(text[done:first])
                sentences.append(text[first:last])
                done = last
        start += len(line)
    between.append(text[done:])
    document = Document(sentences, between)
    if document.join(sentences) != text:  # the segmenter lost characters: the text stays whole
        return Document([text.strip()], [text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]])
    return document


def rejoin(documents: list[Document], generations: list[Generation]) -> list[Generation]:
    """One generation per document from its sentences' generations, in order."""
    joined, at = [], 0
    for document in documents:
        parts, at = generations[at : at + len(document.sentences)], at + len(document.sentences)
        reasons = [g.finish_reason for g in parts if g.finish_reason != "eos"]
        ranks = max(len(g.alternatives) for g in parts)  # the i-th alternative of each sentence, or its best
        joined.append(
            Generation(
                text=document.join([g.text for g in parts]),
                token_ids=[t for g in parts for t in g.token_ids],
                input_tokens=sum(g.input_tokens for g in parts),
                output_tokens=sum(g.output_tokens for g in parts),
                finish_reason=reasons[0] if reasons else "eos",
                alternatives=[
                    document.join([g.alternatives[i] if i < len(g.alternatives) else g.text for g in parts])
                    for i in range(ranks)
                ],
            )
        )
    return joined
