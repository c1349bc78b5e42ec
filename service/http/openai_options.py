"""OpenAI's request fields as heed's (decoding options, prompts, chat messages, the 400s for what
heed cannot honour), and heed's answers as OpenAI's fields. The rules, in one place:

- unset fields take the model's defaults (its generation config), as vLLM does; `temperature` 0
  is greedy decoding (the model's beam size, if it searches), above 0 sampling at that temperature;
- `n` choices per prompt are decoded each on its own, so sampled choices differ and greedy ones
  are the same (as OpenAI's are at temperature 0); choice `i` of prompt `p` has index `p * n + i`;
- refused with a 400 naming the field: `presence_penalty` and `frequency_penalty` other than 0
  (heed has `repetition_penalty`, sent as an extra field), `logit_bias`, `logprobs`, `suffix`,
  `best_of` other than `n`, token-id prompts, `tools`/`functions`, a `response_format` other than
  text: accepting them would answer something other than what was asked.
"""

from __future__ import annotations

from typing import Any

from service.errors import InvalidInput
from service.http.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from service.options import GenerationOptions

# heed's options a client may add to OpenAI's (the openai client's `extra_body`), by their name there
EXTRA_OPTIONS = {
    "top_k": "top_k",
    "min_tokens": "min_new_tokens",  # vLLM's name
    "min_new_tokens": "min_new_tokens",
    "repetition_penalty": "repetition_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
    "length_penalty": "length_penalty",
    "beam_size": "beam_size",
    "early_stopping": "early_stopping",
}
LANGUAGE_FIELDS = ("target_lang", "source_lang")  # for translation models, also as extra fields


def refuse_unsupported(body: SamplingFields) -> None:
    unsupported = [
        ("presence_penalty", body.presence_penalty != 0),
        ("frequency_penalty", body.frequency_penalty != 0),
        ("logit_bias", bool(body.logit_bias)),
        ("logprobs", bool(getattr(body, "logprobs", None))),
    ]
    if isinstance(body, CompletionRequest):
        unsupported += [("suffix", bool(body.suffix)), ("best_of", body.best_of not in (None, body.n))]
    if isinstance(body, ChatCompletionRequest):
        unsupported += [
            ("tools", bool(body.tools) or bool(body.functions)),
            ("tool_choice", body.tool_choice not in (None, "none")),
            ("response_format", (body.response_format or {}).get("type", "text") != "text"),
        ]
    field = next((name for name, sent in unsupported if sent), None)
    if field is not None:
        hint = " (heed has repetition_penalty, as an extra field)" if field.endswith("_penalty") else ""
        raise InvalidInput(f"'{field}' is not supported by this server{hint}")


def generation_options(body: SamplingFields, max_tokens: int | None) -> GenerationOptions:
    extra = body.model_extra or {}
    values: dict[str, Any] = {heed: extra[name] for name, heed in EXTRA_OPTIONS.items() if name in extra}
    values |= {"max_new_tokens": max_tokens, "top_p": body.top_p, "seed": body.seed}
    if body.temperature is not None:
        values |= {"do_sample": body.temperature > 0} | ({"temperature": body.temperature} if body.temperature else {})
    if body.stop is not None:
        values["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    return GenerationOptions.parse({key: value for key, value in values.items() if value is not None})


def languages(body: SamplingFields) -> dict[str, str | None]:
    extra = body.model_extra or {}
    for field in LANGUAGE_FIELDS:
        if field in extra and not isinstance(extra[field], str | None):
            raise InvalidInput(f"'{field}' must be a language code")
    return {field: extra.get(field) for field in LANGUAGE_FIELDS}


def prompts(body: CompletionRequest) -> list[str]:
    prompt = body.prompt
    texts = [prompt] if isinstance(prompt, str) else prompt
    if not texts or not all(isinstance(text, str) for text in texts):
        raise InvalidInput("'prompt' must be a text or a list of texts (token ids are not supported)")
    return texts


def chat_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The messages as a chat template reads them: `content` a string (the text parts of a list
    joined by newlines, as vLLM joins them); other parts (images, audio) are refused."""
    messages = []
    for i, message in enumerate(body.messages):
        fields = message.model_dump(exclude_none=True)
        if isinstance(message.content, list):
            kinds = {part.type for part in message.content} - {"text"}
            if kinds:
                raise InvalidInput(
                    f"messages.{i}: content of type {', '.join(sorted(kinds))} is not supported (text only)"
                )
            fields["content"] = "\n".join(part.text or "" for part in message.content)
        messages.append(fields)
    return messages


# -- and back: heed's answers in OpenAI's fields -------------------------------------------------


def finish_reason(heed: str) -> str:
    """heed's reasons (eos, stop, length) as OpenAI's: the end of text and a stop string are both `stop`."""
    return "length" if heed == "length" else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def error_body(type_: str, message: str, request_id: str | None) -> dict:
    """OpenAI's error object; `code` is heed's error type (OpenAI's codes are as specific)."""
    return {"error": {"message": message, "type": type_, "param": None, "code": type_, "request_id": request_id}}
