"""What a decoder-only model is asked when it serves `/v1/summarize`: the text inside a prompt.

A seq2seq summarizer reads the text itself; a decoder-only model continues a prompt, so the
text goes into its manifest's `summarize_prompt` (`{text}` marks where), else into a default
that works without fine-tuning for its kind: a chat model gets the instruction as the user's
message, rendered with its own chat template; a plain language model gets GPT-2's "TL;DR:"
cue (Radford et al., 2019), which base models continue with a summary.
"""

from __future__ import annotations

from service.chat import render_chat
from service.manifest import Manifest

DEFAULT_CHAT_PROMPT = "Summarize the following text in a few sentences.\n\n{text}"
DEFAULT_PLAIN_PROMPT = "{text}\n\nTL;DR:"


def summarize_prompts(manifest: Manifest, texts: list[str]) -> tuple[list[str], bool]:
    """The prompts for `texts`, and whether the tokenizer should still add its special tokens
    (not to a rendered chat template, which holds them)."""
    if manifest.chat is None:
        template = manifest.summarize_prompt or DEFAULT_PLAIN_PROMPT
        return [template.replace("{text}", text) for text in texts], True
    template = manifest.summarize_prompt or DEFAULT_CHAT_PROMPT
    chat = manifest.chat
    messages = ([{"role": "user", "content": template.replace("{text}", text)}] for text in texts)
    return [render_chat(chat.template, m, chat.tokens) for m in messages], False
