"""Incremental detokenization: the text of a growing token sequence, a few tokens at a time.

Decoding the whole output after every token costs O(n) per token and O(n^2) per request. Like
TGI's `decode_token`, a `Detokenizer` decodes only a window: the tokens since the last text it
emitted (`prefix`..`read`) with and without the new ones, and emits the difference. Decoding
both sides of the window the same way keeps what a tokenizer does at the start of a string (a
SentencePiece leading space dropped, a word-piece `##` join) out of the difference, and a window
that ends inside a multi-byte character (U+FFFD) waits for the rest of it.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"


class Detokenizer:
    def __init__(self, decode: Callable[[list[int]], str], context: list[int] = ()):
        """`context`: tokens before the output (the end of a decoder-only prompt), decoded with
        its first window so that the output's first token reads as it does after them."""
        self.decode = decode
        self.ids: list[int] = list(context)
        self.text = ""  # everything emitted so far
        self.prefix = 0  # the window starts here: the tokens of the previous emission, for context
        self.read = len(self.ids)  # tokens up to here have been emitted

    def push(self, token: int) -> str:
        """Add a token; returns the text it completes ("" while a character or word is unfinished)."""
        self.ids.append(token)
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""
        delta = after[len(before) :]
        self.prefix, self.read = self.read, len(self.ids)
        self.text += delta
        return delta


def continuation(decode: Callable[[list[int]], str], context: list[int], tokens: list[int]) -> str:
    """The text of `tokens` as it reads after `context` (the whole text, where there is none)."""
    if not context:
        return decode(tokens)
    before, after = decode(context), decode([*context, *tokens])
    return after[len(before) :] if after.startswith(before) else decode(tokens)
