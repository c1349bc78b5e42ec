"""Sentences cut by inline tags: a block of text and inline elements is translated as one text,
and its inline elements are put back around the words they wrap.

A model translates `one hundred and <b>twenty</b>-three` well only as the whole sentence; its
three text runs translated apart read `einhundert zwanzig dreiunddreißig`. So the block's text is
translated whole, and so is each inline element's own text (in the same batch); where each
element's translation occurs in the block's translation, in order, once, and case aside, the
block's translation is cut there and its pieces become the text of the same text nodes: the
element tree, the attributes and the nesting are the ones parsed, only text changes. Where that
cannot be done exactly (an element's translation is not found, or found twice), `place` says so
and the caller translates the block's runs one by one, as everything else (service/markup.py):
moving tags across a reordered translation would need a word alignment heed's models are not
trained for, and a guess could put a link around the wrong words.

The parsers (service/markup.py) find the blocks; this module only cuts the translated text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# HTML's phrasing elements that wrap words inside a sentence (a link, emphasis, a mention's span).
# Not here, so a block's boundary: elements left as written (`code`, `kbd`-like code and data
# are in service/markup.py's VERBATIM or stay runs of their own), line breaks and images (no
# words to wrap), and block elements (a paragraph ends a sentence).
INLINE = frozenset(
    {
        "a", "abbr", "b", "bdi", "bdo", "cite", "data", "del", "dfn", "em", "font", "i", "ins",
        "mark", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "time", "u",
    }
)  # fmt: skip
# inline elements nested deeper than this make their block fall back to runs (and bound the recursion)
MAX_DEPTH = 32


@dataclass(frozen=True)
class Span:
    """Inline content: its text (stripped: what is translated), and its children in document
    order, a text node as its text as written, an inline element as a `Span`."""

    text: str
    children: tuple[str | Span, ...]

    def spans(self) -> list[Span]:
        """The inline elements inside, in document order (an element before what it holds)."""
        found: list[Span] = []
        for child in self.children:
            if isinstance(child, Span):
                found += [child, *child.spans()]
        return found

    def leaves(self) -> list[str]:
        """The text nodes inside, as written, in document order."""
        return [t for child in self.children for t in ([child] if isinstance(child, str) else child.leaves())]


@dataclass(frozen=True)
class Block:
    """Text nodes and inline elements that are siblings, between two boundaries: translated as
    one text (`content.text`), with `runs` the indices of its text runs in `Markup.texts`."""

    content: Span
    runs: range


def span(children: tuple[str | Span, ...]) -> Span:
    """The `Span` of this content, its text the children's joined."""
    return Span("".join(leaf for child in children for leaf in _leaves(child)).strip(), children)


def _leaves(child: str | Span) -> list[str]:
    return [child] if isinstance(child, str) else child.leaves()


def place(block: Block, translation: str, translations: Mapping[str, str]) -> list[str] | None:
    """The new text of each of the block's text nodes (in document order), from the block's
    `translation` and each inline element's (`translations`, by the element's text); None when
    an element's translation is not in the block's exactly once, in order, or text would have no
    text node to go in. The block keeps its leading and trailing whitespace as written."""
    texts = _cut(block.content.children, translation.strip(), translations)
    if texts is None or not texts:
        return None
    written = "".join(block.content.leaves())
    texts[0] = written[: len(written) - len(written.lstrip())] + texts[0]
    texts[-1] += written[len(written.rstrip()) :]
    return texts


def _cut(children: tuple[str | Span, ...], piece: str, translations: Mapping[str, str]) -> list[str] | None:
    """`piece` (a translation) distributed over `children`: the text between the elements'
    translations goes to the text nodes between the elements (to the first of them; the text
    before the first element to the nodes before it, and so on)."""
    texts: list[str] = []
    waiting: list[int] = []  # the text nodes since the last element: where the next gap goes
    folded = _fold(piece)
    at = 0

    def gap(text: str) -> bool:
        if not waiting:
            return not text.strip()  # whitespace between adjacent elements is dropped, words are not
        texts[waiting[0]] = text
        waiting.clear()
        return True

    for child in children:
        if isinstance(child, str):
            waiting.append(len(texts))
            texts.append("")
            continue
        wanted = _fold(translations.get(child.text, "").strip())
        start = folded.find(wanted, at) if wanted else -1
        if start < 0 or folded.find(wanted, start + 1) >= 0:  # not there, or not there once
            return None
        end = start + len(wanted)
        inner = _cut(child.children, piece[start:end], translations)
        if inner is None or not gap(piece[at:start]):
            return None
        texts += inner
        at = end
    return texts if gap(piece[at:]) else None


def _fold(text: str) -> str:
    """The text lower-cased, character by character so that indices stay those of `text` (`İ`
    lower-cases to two characters: it stays as it is)."""
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
