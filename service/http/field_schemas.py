"""OpenAPI request bodies of the routes that read their fields themselves (service/http/fields.py:
LibreTranslate's and DeepL's, which take JSON, a form or the query string alike).

FastAPI cannot infer these bodies, so without them `/openapi.json` would say the routes take none:
clients generated from the schema would send nothing, and Schemathesis would test them only with
empty requests. The schemas describe what the routes read; the routes still validate every field
themselves, with each protocol's own messages, so a body outside these schemas gets that
protocol's 400, never a 422 in heed's shape.
"""

from __future__ import annotations

from typing import Any

STRING: dict[str, Any] = {"type": "string"}
STRINGS: dict[str, Any] = {"type": "array", "items": STRING}


def body(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """A request body taken as JSON or as a form, with these fields."""
    schema = {"type": "object", "properties": properties, "required": required}
    content = {kind: {"schema": schema} for kind in ("application/json", "application/x-www-form-urlencoded")}
    return {"requestBody": {"required": True, "content": content}}


LIBRETRANSLATE_TRANSLATE = body(
    {
        "q": {"anyOf": [STRING, STRINGS], "description": "a text, or a list of texts"},
        "source": {**STRING, "description": "a language code, or auto"},
        "target": STRING,
        "format": {"enum": ["text", "html"]},
        "alternatives": {"type": "integer", "minimum": 0},
        "api_key": STRING,
    },
    ["q", "source", "target"],
)
LIBRETRANSLATE_DETECT = body({"q": STRING, "api_key": STRING}, ["q"])

DEEPL_TRANSLATE = body(
    {
        "text": STRINGS,
        "target_lang": {**STRING, "description": "DE, EN-US, PT-BR, ... (case-insensitive)"},
        "source_lang": STRING,
        "split_sentences": {"enum": ["0", "1", "nonewlines"]},
        "preserve_formatting": {"type": "boolean"},
        "tag_handling": {"enum": ["html", "xml"]},
        "ignore_tags": {"anyOf": [STRING, STRINGS]},
        "formality": {"enum": ["default", "prefer_more", "prefer_less", "more", "less"]},
        "context": STRING,
        "glossary_id": STRING,
        "show_billed_characters": {"type": "boolean"},
    },
    ["text", "target_lang"],
)
