"""The one rule for the characters of a text heed reads (to translate, summarize, generate from,
detect the language of, or parse as HTML or XML), applied wherever such text enters: validation
(service/validation.py), language detection (service/languages.py) and markup parsing
(service/markup.py), so that each protocol gets the same 4xx, before any of them touches it.

Refused, never stripped:

- lone UTF-16 surrogates (U+D800 to U+DFFF): JSON's `"\\ud800"` escape decodes to a Python `str`
  that is no Unicode text at all: it has no UTF-8 form, the tokenizer raises `TypeError` on it,
  the HTML parser silently drops it and no answer echoing it could be encoded;
- control characters (Unicode category Cc) other than tab, line feed, vertical tab, form feed
  and carriage return: NUL, escape sequences, DEL and the C1 range. In text they are the mark of a
  client bug (a C string, binary data, a terminal's colours, or cp1252 text decoded as Latin-1,
  where the curly quotes and the ellipsis become U+0093, U+0094 and U+0085), and the model was
  trained on none of them.

Why refuse rather than strip: heed answers each text with its layout kept character for character
(service/documents.py), and a character quota counts what was sent; stripping would translate a
text other than the one sent, silently, and a client with a broken encoding would never learn of
it. The 422 (LibreTranslate's and DeepL's 400) names the character and where it is.

Not refused: format characters (bidirectional marks, zero-width joiners: real text needs them),
private-use and unassigned code points, noncharacters (U+FFFE), and text in any normalization
form: the model's tokenizer normalizes (NFKC and the like) itself, and its output is checked
against the model's token limit after that.
"""

from __future__ import annotations

import re

from service.errors import InvalidInput

_REFUSED = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def check_text(text: str, what: str) -> None:
    """Raise `InvalidInput` naming the first refused character of `text` (`what`: how the message
    names the text, e.g. "input text 2")."""
    found = _REFUSED.search(text)
    if found is None:
        return
    code = ord(found.group())
    kind = "a lone UTF-16 surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    raise InvalidInput(
        f"{what} has {kind}, U+{code:04X}, at character {found.start()}: heed takes Unicode text "
        "without lone surrogates (a \\ud800-\\udfff escape not in a pair) and without control "
        "characters but tab, line feed, vertical tab, form feed and carriage return"
    )
