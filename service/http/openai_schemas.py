"""Request bodies of the OpenAI-compatible routes, as the official clients send them.

Fields OpenAI defines and heed honours are typed here; fields OpenAI defines that heed cannot
honour without changing what the answer means (`logprobs`, `tools`, `logit_bias`, penalties
other than 0, ...) are typed too, so that `openai_options.refuse_unsupported` names them in a
400; fields OpenAI adds later, or that a client sends for another server, are ignored, as
vLLM does (`extra="allow"`). heed's own options ride along as extra fields the clients send
through `extra_body` (`top_k`, `min_tokens`, `repetition_penalty`, `beam_size`, `target_lang`,
`source_lang`, ...), under the names and bounds of `GenerationOptions`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """What completions and chat completions share."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="the model's name, as GET /v1/models lists it")
    max_tokens: int | None = Field(None, ge=1, description="tokens to generate at most; default: the model's")
    temperature: float | None = Field(
        None, ge=0, le=2, allow_inf_nan=False, description="0: greedy; unset: the model's default decoding"
    )
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=16, description="choices per prompt, each decoded on its own")
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    logit_bias: dict[str, float] | None = None
    user: str | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(description="a text or a list of texts")
    echo: bool = Field(False, description="the prompt, then its completion")
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ...: passed to the template as given

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="the newer name of max_tokens")
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
