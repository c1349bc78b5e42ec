"""HTML and XML through translation: the text runs of a document, and the document again with
their translations in place, its markup as it was.

Each kind has the parser that best keeps what was written, so that a document whose runs come
back unchanged renders to the same tree:

- HTML: Lexbor (selectolax), an HTML5 parser and serializer. Clients render our answer with an
  HTML5 parser, so the tree that must survive is the one a browser builds; libxml2's HTML parser
  (lxml) builds a different one for misnested tags (`<b>1<p>2</b>3</p>` loses its second bold)
  and escapes raw text (`<iframe>`, `<xmp>`). A fragment is parsed as a browser's innerHTML
  (a `<div>` context) and written back without the `<html>`, `<head>` and `<body>` it never had.
- XML: lxml (libxml2), which checks well-formedness with a line and column, and keeps namespace
  prefixes, comments, processing instructions, CDATA, the DOCTYPE and entity references as they
  were (the standard library's ElementTree renames prefixes to ns0 and drops the DOCTYPE).
  External entities are never loaded or expanded (no XXE, no entity bombs).

A sentence cut by inline tags (`one <b>two</b> three`) is also a `Block` (service/inline_markup.py):
its text is translated whole and cut back into its text nodes where that can be done exactly; each
text run is also here on its own, for the blocks where it cannot. Either way only text nodes change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lxml import etree
from selectolax.lexbor import LexborDocumentOptions, LexborHTMLParser, LexborNode

from service.characters import check_text
from service.errors import InvalidInput
from service.inline_markup import INLINE, MAX_DEPTH, Block, Span, span

Kind = Literal["html", "xml"]

# elements whose text is code, data or preformatted, never prose: left as written
VERBATIM = frozenset({"script", "style", "code", "pre", "textarea", "listing", "xmp", "plaintext"})
_FIRST_NEWLINE_EATEN = frozenset({"pre", "textarea", "listing"})
_ITS_TRANSLATE = "{http://www.w3.org/2005/11/its}translate"  # XML's translate="no" (W3C ITS)
# an XML fragment (text with tags, as DeepL's clients send) is parsed as the content of this element;
# its name shows in the one error it can cause: "Opening and ending tag mismatch: b line 1 and end-of-text"
_OPEN, _CLOSE = "<end-of-text>", "</end-of-text>"


@dataclass(frozen=True)
class Markup:
    """A parsed document: its text runs to translate, in document order, the blocks of text and
    inline elements among them (service/inline_markup.py), and the document again."""

    texts: list[str]  # each run without its surrounding whitespace; whitespace-only runs are not here
    _fill: Callable[[list[str], Mapping[int, list[str]]], str] = field(repr=False)
    blocks: list[Block] = field(default_factory=list)  # each with two runs or more

    def render(self, translations: list[str], placed: Mapping[int, list[str]] | None = None) -> str:
        """The document with each run replaced by its translation, inside the run's own whitespace;
        the runs of a block in `placed` (by its index in `blocks`) are not: that block's text nodes
        get the texts it maps to instead, as they are (`inline_markup.place`).

        Renders from the parse each time, so one `Markup` can be rendered more than once."""
        if len(translations) != len(self.texts):
            raise ValueError(f"{len(translations)} translations for {len(self.texts)} text runs")
        placed = placed or {}
        for b, texts in placed.items():
            if len(texts) != len(self.blocks[b].content.leaves()):
                raise ValueError(
                    f"{len(texts)} texts for the {len(self.blocks[b].content.leaves())} text nodes of block {b}"
                )
        return self._fill([t.strip() for t in translations], placed)


def parse(document: str, kind: Kind, ignore: frozenset[str] = frozenset()) -> Markup:
    """The text runs of an HTML or XML document (or fragment), outside the elements named in
    `ignore` (left as written, as `VERBATIM`'s are); malformed XML, and characters that heed
    refuses in any text (service/characters.py: the HTML parser would drop them silently), raise
    `InvalidInput`."""
    check_text(document, f"the {kind.upper()} document")
    if kind == "html":
        return _parse_html(document, VERBATIM | {name.lower() for name in ignore})
    if kind == "xml":
        return _parse_xml(document, VERBATIM | ignore)
    raise ValueError(f"unknown markup kind {kind!r}")


def _rewrap(original: str, translation: str) -> str:
    """The translation inside the leading and trailing whitespace of the run it replaces."""
    start = len(original) - len(original.lstrip())
    return original[:start] + translation + original[start + len(original.strip()) :]


def _translated(name: str, translate: str | None, verbatim: frozenset[str]) -> bool:
    return name not in verbatim and (translate or "").strip().lower() != "no"


# -- the runs and blocks of a tree, for either parser ------------------------------------------
# A node's content is a sequence of items: ("text", where, its text) for a text node (`where`
# is what the parser replaces: a Lexbor node, or an lxml (element, "text" | "tail") slot), and
# ("node", node, inline) for anything else, `inline` telling whether it may join a block.
Item = tuple[str, Any, Any]


@dataclass
class _Content:
    """What a walk found: each run's place, the blocks, and the places of each block's text nodes."""

    runs: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    leaves: list[list[Any]] = field(default_factory=list)

    def close(self, children: list[str | Span], places: list[Any]) -> None:
        """The end of a sequence of text nodes and inline elements: its runs, and a block if it
        has more than one (one run alone is translated whole anyway)."""
        start = len(self.runs)
        for place, text in zip(places, (leaf for child in children for leaf in _leaf_texts(child)), strict=True):
            if text.strip():
                self.runs.append(place)
                self.texts.append(text.strip())
        if len(self.runs) - start >= 2:
            self.blocks.append(Block(span(tuple(children)), range(start, len(self.runs))))
            self.leaves.append(list(places))
        children.clear()
        places.clear()


def _leaf_texts(child: str | Span) -> list[str]:
    return [child] if isinstance(child, str) else child.leaves()


def _walk(top: Iterable[Item], items: Callable[[Any], list[Item] | None]) -> _Content:
    """The runs and blocks in document order; `items` is a node's content, None for one left as
    written. An explicit stack: a deep document does not reach Python's recursion limit."""
    found = _Content()
    stack: list[tuple[Any, list[str | Span], list[Any]]] = [(iter(top), [], [])]
    while stack:
        pending, children, places = stack[-1]
        item = next(pending, None)
        if item is None:
            stack.pop()
            found.close(children, places)
            continue
        kind, where, value = item
        if kind == "text":
            children.append(value)
            places.append(where)
            continue
        inline = _inline(where, items, 0) if value else None
        if inline is not None:
            children.append(inline[0])
            places += inline[1]
            continue
        found.close(children, places)  # a boundary: a block element, a line break, a comment, ...
        content = items(where)
        if content is not None:
            stack.append((iter(content), [], []))
    return found


def _inline(node: Any, items: Callable[[Any], list[Item] | None], depth: int) -> tuple[Span, list[Any]] | None:
    """An inline element's `Span` and the places of its text nodes; None unless it holds text,
    and only text and inline elements, not left as written."""
    content = items(node) if depth < MAX_DEPTH else None
    if content is None:
        return None
    children: list[str | Span] = []
    places: list[Any] = []
    for kind, where, value in content:
        if kind == "text":
            children.append(value)
            places.append(where)
            continue
        inner = _inline(where, items, depth + 1) if value else None
        if inner is None:
            return None
        children.append(inner[0])
        places += inner[1]
    whole = span(tuple(children))
    return (whole, places) if whole.text else None


# -- HTML --------------------------------------------------------------------------------------


def _parse_html(document: str, verbatim: frozenset[str]) -> Markup:
    found = _html_content(_read_html(document), verbatim)

    def fill(translations: list[str], placed: Mapping[int, list[str]]) -> str:
        # replacing a node detaches it: every render replaces in a fresh parse (the parser's clone()
        # would lose the content of <template> elements)
        tree = _read_html(document)
        again = _html_content(tree, verbatim)
        kept = {r for b in placed for r in again.blocks[b].runs}
        for r, (node, translation) in enumerate(zip(again.runs, translations, strict=True)):
            if r not in kept:
                node.replace_with(_rewrap(node.text_content, translation))
        for b, texts in placed.items():
            for node, text in zip(again.leaves[b], texts, strict=True):
                node.replace_with(text)
        return tree.html

    return Markup(found.texts, fill, found.blocks)


def _read_html(document: str) -> LexborHTMLParser:
    # a document is what lxml.html also takes for one: it starts with a doctype or <html>
    fragment = not document.lstrip()[:9].lower().startswith(("<!doctype", "<html"))
    # WO_EVENTS: no tree changes after parsing (such as <selectedcontent> copying an <option>)
    tree = LexborHTMLParser(document, is_fragment=fragment, options=LexborDocumentOptions.WO_EVENTS)
    # parsing eats the first newline of a pre, textarea or listing and Lexbor writes none back: a
    # text that still starts with one (the source had two) gets one more, so that it survives
    for element in tree.css(", ".join(_FIRST_NEWLINE_EATEN)):
        first = element.first_child
        if first is not None and first.is_text_node and first.text_content.startswith("\n"):
            first.replace_with("\n" + first.text_content)
    return tree


def _html_content(tree: LexborHTMLParser, verbatim: frozenset[str]) -> _Content:
    def items(node: LexborNode) -> list[Item] | None:
        if not (node.is_element_node and _translated(node.tag, node.attributes.get("translate"), verbatim)):
            return None
        return _html_items(node.first_child)

    return _walk(_html_items(tree.root), items)  # a fragment's root is its first node: siblings follow


def _html_items(node: LexborNode | None) -> list[Item]:
    """`node` and its next siblings as items: an element of `INLINE` may join a block."""
    found: list[Item] = []
    while node is not None:
        if node.is_text_node:
            found.append(("text", node, node.text_content))
        else:
            found.append(("node", node, node.is_element_node and node.tag in INLINE))
        node = node.next
    return found


# -- XML ---------------------------------------------------------------------------------------


def _parse_xml(document: str, verbatim: frozenset[str]) -> Markup:
    # a document has a prolog (the XML declaration or a DOCTYPE); anything else is content
    whole = document.lstrip().startswith(("<?xml", "<!DOCTYPE"))
    found = _xml_content(_read_xml(document, whole), verbatim)

    def fill(translations: list[str], placed: Mapping[int, list[str]]) -> str:
        root = _read_xml(document, whole)  # a fresh parse (cheap) for each render, as for HTML
        again = _xml_content(root, verbatim)
        kept = {r for b in placed for r in again.blocks[b].runs}
        news = [
            (slot, _rewrap(getattr(*slot), t))
            for r, (slot, t) in enumerate(zip(again.runs, translations))
            if r not in kept
        ]
        news += [(slot, text) for b, texts in placed.items() for slot, text in zip(again.leaves[b], texts, strict=True)]
        for (node, side), text in news:
            if text != getattr(node, side):  # an unchanged run keeps its form (a CDATA section stays one)
                setattr(node, side, text)
        if whole:
            return _prolog(document) + etree.tostring(root.getroottree(), encoding="unicode") + _trailing(document)
        written = etree.tostring(root, encoding="unicode")
        return written[len(_OPEN) : -len(_CLOSE)] if written.endswith(_CLOSE) else ""  # "": <end-of-text/>

    return Markup(found.texts, fill, found.blocks)


def _read_xml(document: str, whole: bool) -> etree._Element:
    """The document's root element, or the wrapper of the content; `InvalidInput` saying where
    it is not well-formed."""
    source = document if whole else _OPEN + document + _CLOSE
    # UTF-8, whatever encoding the XML declaration names: the document came as a str
    parser = etree.XMLParser(resolve_entities=False, no_network=True, strip_cdata=False, encoding="utf-8")
    try:
        return etree.fromstring(source.encode("utf-8"), parser)
    except etree.XMLSyntaxError as e:
        if not parser.error_log:
            raise InvalidInput(f"the XML document is not well-formed: {e.msg}") from e
        error = parser.error_log[0]
        line, column = error.line, error.column - (len(_OPEN) if not whole and error.line == 1 else 0)
        lines = document.split("\n")
        past_the_end = not whole and (line > len(lines) or column > len(lines[line - 1]) + 1)
        where = "at the end of the text" if past_the_end else f"line {line}, column {column}"
        raise InvalidInput(f"the XML document is not well-formed: {error.message} ({where})") from e


def _xml_content(root: etree._Element, verbatim: frozenset[str]) -> _Content:
    """The runs and blocks; a run's place is (node, "text") for an element's first text, (node,
    "tail") for the text after a node (an element, comment, entity or PI: only an element holds
    prose). XML names no inline elements: an element may join a block when its name is HTML's
    inline one or when it is in mixed content (text beside it, as `<b>` in `Press <b>OK</b> now`)."""

    def items(element: etree._Element) -> list[Item] | None:
        if not isinstance(element.tag, str):
            return None
        translate = element.get("translate") or element.get(_ITS_TRANSLATE)
        if not _translated(etree.QName(element).localname, translate, verbatim):
            return None
        mixed = bool((element.text or "").strip()) or any((child.tail or "").strip() for child in element)
        found: list[Item] = [("text", (element, "text"), element.text)] if element.text else []
        for child in element:
            name = etree.QName(child).localname.lower() if isinstance(child.tag, str) else None
            found.append(("node", child, name is not None and (mixed or name in INLINE)))
            if child.tail:
                found.append(("text", (child, "tail"), child.tail))
        return found

    return _walk([("node", root, False)], items)


def _prolog(document: str) -> str:
    """The XML declaration as written, with the whitespace after it (lxml writes none for a str)."""
    if not (document.startswith("<?xml") and document[5:6].isspace()):
        return ""
    declaration = document[: document.index("?>") + 2]
    rest = document[len(declaration) :]
    return declaration + rest[: len(rest) - len(rest.lstrip())]


def _trailing(document: str) -> str:
    return document[len(document.rstrip()) :]
