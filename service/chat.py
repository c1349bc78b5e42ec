"""Chat messages rendered into a prompt with the checkpoint's own chat template, as transformers'
`apply_chat_template` renders them, so that a model hears the conversation in the format it was
trained on.

Templates come with checkpoints from anywhere, so they run in Jinja2's immutable sandbox (no
attribute access to Python internals, no mutation of what is passed in), with what templates in
the wild expect of transformers: `trim_blocks` and `lstrip_blocks`, loop controls, the
`{% generation %}` block (a marker for training masks: rendered as its content), a `tojson` filter
that keeps non-ASCII text, `raise_exception` (a template refusing a conversation, e.g. roles that
do not alternate, is the caller's error: a 400) and `strftime_now`.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from service.errors import InvalidInput


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}`: its content, unchanged."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compiled(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _Generation])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(template: str, messages: list[dict[str, Any]], special_tokens: dict[str, str]) -> str:
    """The prompt for `messages`, ending where the assistant's answer begins.

    `special_tokens` are the template's variables for the tokenizer's special tokens
    (`bos_token`, `eos_token`, ...), as transformers passes them."""
    try:
        template_object = _compiled(template)
    except jinja2.TemplateSyntaxError as e:
        raise InvalidInput(f"the model's chat template does not compile: {e.message} (line {e.lineno})") from e
    try:
        return template_object.render(messages=messages, add_generation_prompt=True, **special_tokens)
    except jinja2.TemplateError as e:  # raise_exception(...), an undefined operation, a sandbox refusal
        raise InvalidInput(f"the model's chat template refused these messages: {e}") from e
