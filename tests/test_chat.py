"""Chat templates render as transformers renders them (service/chat.py), on templates written as
checkpoints write them, and a template cannot reach Python's internals."""

from __future__ import annotations

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from service.chat import render_chat
from service.errors import InvalidInput

CHATML = (  # Qwen2's layout: a default system message, <|im_start|>role ... <|im_end|>
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (  # Llama 3's: bos_token, headers, trimmed content, loop controls
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
ALTERNATING = (  # Mistral's: roles must alternate, refused with raise_exception
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
TOJSON = (  # non-ASCII through tojson, a {% generation %} block (assistant masks), strftime_now
    "{% for m in messages %}{{ m | tojson }}{% generation %}{{ m['content'] }}{% endgeneration %}"
    "{% break %}{% endfor %}{{ strftime_now('%Y') | length }}"
)
TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}
CONVERSATION = [
    {"role": "system", "content": "  Translate into German.  "},
    {"role": "user", "content": "Grüße aus Köln"},
    {"role": "assistant", "content": "Greetings from Cologne"},
    {"role": "user", "content": 'and "quotes" and {{ braces }}'},
]


@pytest.mark.parametrize("template", [CHATML, LLAMA3, TOJSON])
@pytest.mark.parametrize("messages", [CONVERSATION, CONVERSATION[1:2]])
def test_templates_render_as_in_transformers(template, messages):
    want = render_jinja_template([messages], chat_template=template, add_generation_prompt=True, **TOKENS)[0][0]
    assert render_chat(template, messages, TOKENS) == want


def test_a_template_refusing_the_conversation_is_the_callers_error():
    user_only = [{"role": "user", "content": "one"}]
    assert render_chat(ALTERNATING, user_only, TOKENS) == "<s>[INST] one [/INST]"
    with pytest.raises(InvalidInput, match="roles must alternate"):
        render_chat(ALTERNATING, CONVERSATION, TOKENS)


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "refused these messages"),
        ("{{ messages.append(1) }}", "refused these messages"),
        ("{% for m in messages %}", "does not compile"),
    ],
)
def test_templates_cannot_reach_python_or_change_the_messages(template, words):
    messages = [{"role": "user", "content": "one"}]
    with pytest.raises(InvalidInput, match=words):
        render_chat(template, messages, TOKENS)
    assert messages == [{"role": "user", "content": "one"}]
