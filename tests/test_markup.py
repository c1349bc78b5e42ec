"""HTML and XML keep their markup through translation (service/markup.py): the output's parsed tree
is the input's, with only the text runs replaced; here by a fake translation, upper-casing. A
sentence cut by inline tags is a block, translated whole and cut back into its text nodes
(service/inline_markup.py); here by fake translations, a dictionary."""

from __future__ import annotations

import pytest
from lxml import etree
from selectolax.lexbor import LexborHTMLParser, LexborNode

from service.errors import InvalidInput
from service.inline_markup import place
from service.markup import parse


def shout(texts: list[str]) -> list[str]:
    return [t.upper() for t in texts]


def html_tree(markup: str, fragment: bool = True) -> list:
    """The tree an HTML5 parser (a browser) builds: a fragment as innerHTML, or a whole document."""
    parsed = LexborHTMLParser(markup, is_fragment=fragment)
    return _html_nodes(parsed.root if fragment else parsed.root.parent.first_child)


def _html_nodes(node: LexborNode | None) -> list:
    nodes = []
    while node is not None:
        if node.is_element_node:
            attributes = tuple((name, value or "") for name, value in node.attributes.items())  # <input disabled>: ""
            contents = node.template_fragments() if node.tag == "template" else []  # not a child: its content
            nodes.append((node.tag, attributes, _html_nodes(contents[0].first_child if contents else node.first_child)))
        elif node.is_text_node:
            nodes.append(("#text", node.text_content))
        else:
            nodes.append((node.tag, node.html))  # comment, doctype
        node = node.next
    return nodes


def blank(tree: list) -> list:
    """The tree without its text: its shape."""
    return [(n[0], n[1], blank(n[2])) if len(n) == 3 else (n[0], "" if n[0] == "#text" else n[1]) for n in tree]


def elements(tree: list) -> list:
    """The tree's elements, their attributes and their nesting, without its text nodes (a text node
    translated to nothing is not parsed back)."""
    return [(n[0], n[1], elements(n[2])) if len(n) == 3 else n for n in tree if n[0] != "#text"]


def text_of(markup: str) -> str:
    """The text an HTML fragment reads as, its markup aside."""
    return LexborHTMLParser(markup, is_fragment=True).root.text(deep=True)


def xml_tree(markup: str) -> tuple:
    """The tree of an XML document or fragment (parsed inside a wrapper), names with their prefixes."""
    wrapped = markup if markup.startswith("<?xml") else f"<wrapper>{markup}</wrapper>"
    return _xml_node(etree.fromstring(wrapped.encode(), etree.XMLParser(resolve_entities=False)))


def _xml_node(node: etree._Element) -> tuple:
    if not isinstance(node.tag, str):  # comment, processing instruction, entity reference
        return (node.tag.__name__, node.text, node.tail)
    names = (node.tag, node.prefix, tuple(node.attrib.items()), tuple(sorted(node.nsmap.items(), key=str)))
    return (*names, node.text, node.tail, tuple(_xml_node(child) for child in node))


def test_inline_elements_stay_around_the_words_they_wrap_and_attributes_are_kept():
    source = (
        '<p class="lead">one hundred and <b>twenty <i>one</i></b>-three '
        '<a href="https://x.example/?a=1&amp;b=2" title="a title">a link</a><br><img alt="a picture" src="p.png"> '
        "<input disabled> <span data-n='7'>seven</span></p>"
    )
    markup = parse(source, "html")
    assert markup.texts == ["one hundred and", "twenty", "one", "-three", "a link", "seven"]
    want = (
        '<p class="lead">ONE HUNDRED AND <b>TWENTY <i>ONE</i></b>-THREE '
        '<a href="https://x.example/?a=1&amp;b=2" title="a title">A LINK</a><br><img alt="a picture" src="p.png"> '
        "<input disabled> <span data-n='7'>SEVEN</span></p>"
    )
    assert html_tree(markup.render(shout(markup.texts))) == html_tree(want)


def test_code_data_and_translate_no_are_left_as_written():
    source = (
        "<p>see <code>x = 1</code> and</p><pre>\n\n  keep  this\n</pre>"
        '<script>if (a < b) { s = "</p>"; }</script><style>p > b { color: red }</style>'
        "<textarea>\n\nfield value</textarea>"
        '<p translate="no">Heed <b>Inc</b></p><span translate="NO">keep</span> tail <b translate="yes">bold</b>'
        '<span class="h-card" translate="no"><a href="https://m.example/@bob">@<span>bob</span></a></span>'
    )
    markup = parse(source, "html")
    assert markup.texts == ["see", "and", "tail", "bold"]
    out = markup.render(shout(markup.texts))
    want = source.replace("see", "SEE").replace(" and<", " AND<").replace("tail", "TAIL").replace("bold<", "BOLD<")
    assert html_tree(out) == html_tree(want)
    assert html_tree(out) != html_tree(source)
    # a pre or textarea that starts with a blank line keeps it (parsing eats one newline)
    assert [n for n in html_tree(out) if n[0] in ("pre", "textarea")] == [
        ("pre", (), [("#text", "\n  keep  this\n")]),
        ("textarea", (), [("#text", "\nfield value")]),
    ]


def test_whitespace_around_and_between_runs_is_kept():
    source = "\n  <p>  lots   of space\n</p>\n\n<p> </p>\t<ul>\n  <li>one</li>\n  <li> two </li>\n</ul>\n"
    markup = parse(source, "html")
    assert markup.texts == ["lots   of space", "one", "two"]
    out = markup.render(["WIDE", "EINS", "ZWEI"])
    want = "\n  <p>  WIDE\n</p>\n\n<p> </p>\t<ul>\n  <li>EINS</li>\n  <li> ZWEI </li>\n</ul>\n"
    assert html_tree(out) == html_tree(want)
    assert markup.render([" padded  ", "a", "b"]).startswith("\n  <p>  padded\n</p>")  # the run's own whitespace


def test_entities_are_read_as_text_and_translations_are_escaped():
    source = "<p>Fish &amp; chips &lt;b&gt; &copy; 2024&nbsp;ok &#233;t&eacute;</p><p>two</p>"
    markup = parse(source, "html")
    assert markup.texts == ["Fish & chips <b> © 2024\xa0ok été", "two"]
    want = "<p>FISH &amp; CHIPS &lt;B&gt; © 2024&nbsp;OK ÉTÉ</p><p>TWO</p>"
    assert html_tree(markup.render(shout(markup.texts))) == html_tree(want)
    hostile = markup.render(['<script>alert("x")</script> & co', "<b>not bold</b>"])
    assert html_tree(hostile) == [
        ("p", (), [("#text", '<script>alert("x")</script> & co')]),
        ("p", (), [("#text", "<b>not bold</b>")]),
    ]


def test_a_fragment_stays_a_fragment():
    source = "<!-- note -->lead <b>bold</b> tail"
    markup = parse(source, "html")
    out = markup.render(shout(markup.texts))
    assert "<html" not in out and "<body" not in out and out.startswith("<!-- note -->")
    assert html_tree(out) == html_tree("<!-- note -->LEAD <b>BOLD</b> TAIL")


def test_a_full_document_keeps_its_doctype_head_and_body():
    source = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>A title</title>'
        '<style>body { margin: 0 }</style></head>\n<body class="page">\n<h1>Heading</h1>\n<p>Text.</p>\n'
        "</body></html>\n"
    )
    markup = parse(source, "html")
    assert markup.texts == ["A title", "Heading", "Text."]
    out = markup.render(shout(markup.texts))
    assert out.startswith("<!DOCTYPE html>")
    want = source.replace("A title", "A TITLE").replace("Heading", "HEADING").replace("Text.", "TEXT.")
    assert html_tree(out, fragment=False) == html_tree(want, fragment=False)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("<b>one<p>two</b>three</p>", True),  # misnested: a browser's tree, not libxml2's
        ("<table><tr><td>cell</td></tr></table><ul><li>a<li>b</ul>", True),
        ("<iframe>x<b></iframe><xmp><b>raw</xmp><svg viewBox='0 0 1 1'><text>svg text</text></svg>", True),
        ("<p title='a &quot;q&quot; &amp; b'>x<!-- c -->y</p><template><p>inert</p></template>", True),
        ("<!doctype html><title>t</title><p>x", False),
    ],
)
def test_an_untranslated_document_renders_to_the_same_tree(source, fragment):
    markup = parse(source, "html")
    assert html_tree(markup.render(markup.texts), fragment) == html_tree(source, fragment)
    shouted = html_tree(markup.render(shout(markup.texts)), fragment)
    assert shouted != html_tree(source, fragment) and blank(shouted) == blank(html_tree(source, fragment))
    markup.render([""] * len(markup.texts))  # runs translated to nothing, and then rendered again from the parse:
    assert html_tree(markup.render(markup.texts), fragment) == html_tree(source, fragment)


def test_xml_keeps_namespaces_prefixes_attributes_comments_and_instructions():
    source = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<doc xmlns="urn:doc" xmlns:x="urn:x" xmlns:its="http://www.w3.org/2005/11/its" x:lang="en">\n'
        '  <x:title id="t1">one title</x:title>\n'
        "  <par>two <x:b class='k'>three</x:b> four<!-- a note --><?render fast?> five</par>\n"
        "  <code>x &lt; 1</code><par its:translate=\"no\">keep</par><par translate='no'>keep too</par>\n"
        "  <par><![CDATA[six <raw>]]></par>\n"
        "</doc>\n"
    )
    markup = parse(source, "xml")
    assert markup.texts == ["one title", "two", "three", "four", "five", "six <raw>"]
    out = markup.render(shout(markup.texts))
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<doc ') and "<x:title " in out
    want = source.replace("<![CDATA[six <raw>]]>", "SIX &lt;RAW&gt;")
    for text in ("one title", "two", "three", "four", "five"):
        want = want.replace(text, text.upper())
    assert xml_tree(out) == xml_tree(want)
    markup.render([""] * len(markup.texts))
    assert xml_tree(markup.render(markup.texts)) == xml_tree(source)


def test_xml_fragments_entities_and_no_external_entities():
    markup = parse("Press <b>Continue</b> to &amp; advance.", "xml")
    assert markup.texts == ["Press", "Continue", "to & advance."]
    assert xml_tree(markup.render(shout(markup.texts))) == xml_tree("PRESS <b>CONTINUE</b> TO &amp; ADVANCE.")
    source = (
        '<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY co "Heed Inc"><!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
        "<r>&co; makes &secret; numbers</r>"
    )
    markup = parse(source, "xml")
    assert markup.texts == ["makes", "numbers"]
    out = markup.render(shout(markup.texts))
    assert "<r>&co; MAKES &secret; NUMBERS</r>" in out and "root:" not in out


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("<b>bold", "at the end of the text"),
        ("<a><b>x</a></b>", "line 1, column 12"),
        ("fish & chips", "line 1, column 7"),
        ("x &nbsp; y", "line 1, column 9"),
        ("<x:a>y</x:a>", "line 1, column 5"),
        ('<?xml version="1.0"?>\n<a>\n<b></a>', "line 3, column"),
        ("<a>one</a><a>two</a>", None),  # a fragment may have many top-level elements
    ],
)
def test_malformed_xml_is_refused_with_where(source, where):
    if where is None:
        assert parse(source, "xml").texts == ["one", "two"]
        return
    with pytest.raises(InvalidInput, match="the XML document is not well-formed") as info:
        parse(source, "xml")
    assert where in info.value.message
    parse(source, "html")  # HTML is never refused


def test_render_takes_one_translation_per_run_and_empty_documents_have_none():
    markup = parse("<p>a</p><p>b</p>", "html")
    with pytest.raises(ValueError, match="1 translations for 2 text runs"):
        markup.render(["A"])
    for kind in ("html", "xml"):
        for empty in ("", "  \n", "<p> </p>"):
            markup = parse(empty, kind)
            assert markup.texts == [] and markup.render([]) == empty


# -- blocks: a sentence cut by inline tags -----------------------------------------------------


def put_back(source: str, translations: dict[str, str], kind: str = "html") -> tuple[str, list[int]]:
    """The document with each block translated whole and put back (fake `translations`: a text
    to its translation), the runs of the blocks that cannot be put back upper-cased; and those
    blocks' indices."""
    markup = parse(source, kind)
    placed = {b: place(block, translations[block.content.text], translations) for b, block in enumerate(markup.blocks)}
    fell = [b for b, texts in placed.items() if texts is None]
    kept = {b: texts for b, texts in placed.items() if texts is not None}
    return markup.render(shout(markup.texts), kept), fell


def test_a_sentence_cut_by_inline_tags_is_translated_whole_and_its_tags_put_back():
    source = "<p>one hundred and <b>twenty</b>-three</p>"
    markup = parse(source, "html")
    assert [b.content.text for b in markup.blocks] == ["one hundred and twenty-three"]
    assert [s.text for s in markup.blocks[0].content.spans()] == ["twenty"] and markup.blocks[0].runs == range(3)
    out, fell = put_back(source, {"one hundred and twenty-three": "einhundertdreiundzwanzig", "twenty": "Zwanzig"})
    assert fell == [] and text_of(out) == "einhundertdreiundzwanzig"  # the sentence's translation, not its pieces
    assert elements(html_tree(out)) == elements(html_tree(source))  # same elements, attributes and nesting
    assert html_tree(out) == [("p", (), [("#text", "einhundertdreiund"), ("b", (), [("#text", "zwanzig")])])]


MENTION = (  # a Mastodon status: a mention (an h-card around a link around a span) and a link mid-sentence
    '<p>Hello <span class="h-card"><a href="https://x.example/@bob" class="u-url mention">@<span>bob</span></a>'
    '</span> see <a href="https://x.example/?a=1&amp;b=2" rel="nofollow noopener" target="_blank">this</a> now</p>'
)


def test_nested_inline_elements_keep_their_tree_and_attributes_byte_for_byte():
    words = {
        "Hello @bob see this now": "Hallo @Bob, sieh dir das jetzt an",
        "@bob": "@bob",
        "bob": "Bob",
        "this": "das",
    }
    out, fell = put_back(MENTION, words)
    assert fell == [] and text_of(out) == "Hallo @Bob, sieh dir das jetzt an"
    assert elements(html_tree(out)) == elements(html_tree(MENTION))
    for tag in ('<span class="h-card">', '<a href="https://x.example/@bob" class="u-url mention">', "<span>"):
        assert tag in out
    assert '<a href="https://x.example/?a=1&amp;b=2" rel="nofollow noopener" target="_blank">das</a>' in out
    assert html_tree(out)[0][2][0] == ("#text", "Hallo ") and html_tree(out)[0][2][-1] == ("#text", " jetzt an")


@pytest.mark.parametrize(
    "words",
    [
        {"@bob": "@bob", "bob": "Bob", "this": "dies"},  # "dies" is not in the sentence's translation
        {"@bob": "@bob", "bob": "Bob", "this": "a"},  # "a" is in it twice: ambiguous
        {"@bob": "@bob", "bob": "Bob", "this": "hallo"},  # before the mention: out of order
        {"@bob": "Herr Bob", "bob": "Bob", "this": "das"},  # the outer element's words are not there
        {"@bob": "@bob", "bob": "Robert", "this": "das"},  # nor the inner one's inside the outer one's
    ],
)
def test_a_block_whose_tags_cannot_be_put_back_exactly_is_translated_run_by_run(words):
    out, fell = put_back(MENTION, {"Hello @bob see this now": "Hallo @Bob, sieh dir das jetzt an"} | words)
    assert fell == [0]
    assert html_tree(out) == html_tree(MENTION.replace("Hello", "HELLO").replace("bob<", "BOB<").replace("see", "SEE")
                                        .replace("this", "THIS").replace("now", "NOW"))  # fmt: skip


def test_what_ends_a_block():
    source = (
        "<div>lead <b>bold</b><p>one <i>two</i></p>x<br>y <em>z</em>"
        "<p>see <code>x = 1</code> and <b>more</b></p>"
        '<p>a <span translate="no">b</span> c <i>d</i><!-- c --> e <span></span> f <img src="i.png"> g</p>'
        "<p><b>whole</b></p><p>one <b>x<br>y</b> two</p><ul><li>a <b>b</b></li></ul></div>"
    )
    markup = parse(source, "html")
    assert [b.content.text for b in markup.blocks] == ["lead bold", "one two", "y z", "and more", "c d", "a b"]
    # every run is still there, in document order, for the blocks translated run by run
    assert markup.texts[:8] == ["lead", "bold", "one", "two", "x", "y", "z", "see"]
    out = markup.render(shout(markup.texts), {b: [t.upper() for t in block.content.leaves()]
                                              for b, block in enumerate(markup.blocks)})  # fmt: skip
    assert html_tree(out) == html_tree(markup.render(shout(markup.texts)))


def test_text_with_no_text_node_to_go_in_falls_back_and_whitespace_is_kept():
    source = "<p>one <b>two</b><i>three</i> four</p>"
    markup = parse(source, "html")
    block = markup.blocks[0]
    assert place(block, "EINS ZWEI UND DREI VIER", {"two": "zwei", "three": "drei"}) is None  # "UND": nowhere to go
    assert place(block, "EINS ZWEI DREI VIER", {"two": "zwei", "three": "drei"}) == ["EINS ", "ZWEI", "DREI", " VIER"]
    padded = parse("\n  <p>\n one <b>two</b> three \n</p>", "html")
    texts = place(padded.blocks[0], " EINS ZWEI DREI ", {"two": "zwei"})
    assert texts == ["\n EINS ", "ZWEI", " DREI \n"] and padded.render(["", "", ""], {0: texts}).startswith("\n  <p>")
    with pytest.raises(ValueError, match="2 texts for the 4 text nodes of block 0"):
        markup.render(shout(markup.texts), {0: ["a", "b"]})


def test_xml_mixed_content_is_a_block_and_keeps_its_tree():
    source = (
        '<doc xmlns:x="urn:x"><t id="1">one</t><t>two</t>'
        "<par>Press <x:b class='k'>Continue</x:b> to advance<!-- n --> five</par>"
        "<par><![CDATA[a]]> <i>b</i></par></doc>"
    )
    markup = parse(source, "xml")
    assert [b.content.text for b in markup.blocks] == ["Press Continue to advance", "a b"]
    out, fell = put_back(source, {"Press Continue to advance": "Drücke Weiter um fortzufahren", "Continue": "weiter",
                                  "a b": "A B", "b": "b"}, "xml")  # fmt: skip
    assert fell == []
    want = source.replace("one", "ONE").replace("two", "TWO").replace("five", "FIVE")
    want = want.replace(
        "Press <x:b class='k'>Continue</x:b> to advance", "Drücke <x:b class='k'>Weiter</x:b> um fortzufahren"
    )
    assert xml_tree(out) == xml_tree(want.replace("<![CDATA[a]]> <i>b</i>", "A <i>B</i>"))
