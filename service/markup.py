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

Text runs are translated each on its own, so inline elements stay around the words they wrap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from lxml import etree
from selectolax.lexbor import LexborDocumentOptions, LexborHTMLParser, LexborNode

from service.characters import check_text
from service.errors import InvalidInput

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
    """A parsed document: its text runs to translate, in document order, and the document again."""

    texts: list[str]  # each run without its surrounding whitespace; whitespace-only runs are not here
    _fill: Callable[[list[str]], str] = field(repr=False)

    def render(self, translations: list[str]) -> str:
        """The document with each run replaced by its translation, inside the run's own whitespace.

        Renders from the parse each time, so one `Markup` can be rendered more than once."""
        if len(translations) != len(self.texts):
            raise ValueError(f"{len(translations)} translations for {len(self.texts)} text runs")
        return self._fill([t.strip() for t in translations])


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


# -- HTML --------------------------------------------------------------------------------------


def _parse_html(document: str, verbatim: frozenset[str]) -> Markup:
    texts = [node.text_content.strip() for node in _html_runs(_read_html(document), verbatim)]

    def fill(translations: list[str]) -> str:
        # replacing a node detaches it: every render replaces in a fresh parse (the parser's clone()
        # would lose the content of <template> elements)
        tree = _read_html(document)
        for node, translation in zip(_html_runs(tree, verbatim), translations, strict=True):
            node.replace_with(_rewrap(node.text_content, translation))
        return tree.html

    return Markup(texts, fill)


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


def _html_runs(tree: LexborHTMLParser, verbatim: frozenset[str]) -> list[LexborNode]:
    """The text nodes to translate, in document order."""
    runs: list[LexborNode] = []
    stack: list[LexborNode | None] = [tree.root]  # a fragment's root is its first node: siblings follow
    while stack:
        node = stack.pop()
        if node is None:
            continue
        stack.append(node.next)
        if node.is_text_node:
            if node.text_content.strip():
                runs.append(node)
        elif node.is_element_node and _translated(node.tag, node.attributes.get("translate"), verbatim):
            stack.append(node.first_child)  # popped before node.next: document order
    return runs


# -- XML ---------------------------------------------------------------------------------------


def _parse_xml(document: str, verbatim: frozenset[str]) -> Markup:
    # a document has a prolog (the XML declaration or a DOCTYPE); anything else is content
    whole = document.lstrip().startswith(("<?xml", "<!DOCTYPE"))
    texts = [getattr(node, side).strip() for node, side in _xml_slots(_read_xml(document, whole), verbatim)]

    def fill(translations: list[str]) -> str:
        root = _read_xml(document, whole)  # a fresh parse (cheap) for each render, as for HTML
        for (node, side), translation in zip(_xml_slots(root, verbatim), translations, strict=True):
            text = _rewrap(getattr(node, side), translation)
            if text != getattr(node, side):  # an unchanged run keeps its form (a CDATA section stays one)
                setattr(node, side, text)
        if whole:
            return _prolog(document) + etree.tostring(root.getroottree(), encoding="unicode") + _trailing(document)
        written = etree.tostring(root, encoding="unicode")
        return written[len(_OPEN) : -len(_CLOSE)] if written.endswith(_CLOSE) else ""  # "": <end-of-text/>

    return Markup(texts, fill)


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


def _xml_slots(element: etree._Element, verbatim: frozenset[str]) -> list[tuple[etree._Element, str]]:
    """Where the runs to translate are, in document order: (node, "text") for an element's first
    text, (node, "tail") for the text after a node (an element, comment, entity or PI)."""
    slots: list[tuple[etree._Element, str]] = []
    translate = element.get("translate") or element.get(_ITS_TRANSLATE)
    if not _translated(etree.QName(element).localname, translate, verbatim):
        return slots
    if element.text and element.text.strip():
        slots.append((element, "text"))
    for child in element:
        if isinstance(child.tag, str):  # an element; comments, PIs and entities hold no prose
            slots += _xml_slots(child, verbatim)
        if child.tail and child.tail.strip():
            slots.append((child, "tail"))
    return slots


def _prolog(document: str) -> str:
    """The XML declaration as written, with the whitespace after it (lxml writes none for a str)."""
    if not (document.startswith("<?xml") and document[5:6].isspace()):
        return ""
    declaration = document[: document.index("?>") + 2]
    rest = document[len(declaration) :]
    return declaration + rest[: len(rest) - len(rest.lstrip())]


def _trailing(document: str) -> str:
    return document[len(document.rstrip()) :]
