"""Request fields as the translation protocols' clients send them: the query string, a JSON body
or a form body (the body wins); a repeated form or query name becomes a list."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fastapi import Request

from service.errors import InvalidInput


def _grouped(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Form or query items as fields: a repeated name (`text=a&text=b`) becomes a list."""
    fields: dict[str, list[Any]] = {}
    for key, value in items:
        if isinstance(value, str):  # not an uploaded file
            fields.setdefault(key, []).append(value)
    return {key: values[0] if len(values) == 1 else values for key, values in fields.items()}


async def read_fields(request: Request) -> dict[str, Any]:
    """The request's parameters: the query string's, then the body's (JSON or form) over them."""
    fields = _grouped(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            raise InvalidInput(f"Invalid request: the body is not valid JSON ({e})") from e
        if not isinstance(body, dict):
            raise InvalidInput("Invalid request: the body must be a JSON object")
        fields |= body
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields |= _grouped((await request.form()).multi_items())
    return fields
