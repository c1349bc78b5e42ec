"""Request and response bodies of the HTTP API (they are also its OpenAPI schema at `/docs`).

Decoding options sit at the top level of a request, as in TGI and the CLI: the request models
inherit `GenerationOptions`, so the HTTP API, the CLI flags and the engine take the same options,
and unknown fields are refused (422) rather than silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.options import GenerationOptions


class DecodeRequest(GenerationOptions):
    target_lang: str | None = Field(None, description="target language (translation models); default from the model")
    source_lang: str | None = Field(None, description="checked against the model's source languages, if it lists any")
    truncate: bool = Field(False, description="cut inputs longer than the model's limit instead of refusing (413)")
    timeout: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="seconds until 504; at most the server's HEED_REQUEST_TIMEOUT"
    )


class TextRequest(DecodeRequest):
    """`/v1/translate` and `/v1/summarize`: one text or a list, answered in order."""

    model: str | None = Field(None, description="model name; default: the server's default model for the task")
    text: str | list[str]


class TranslateRequest(TextRequest):
    return_alignment: bool = Field(
        False, description="also return each output token's cross-attention over the input tokens"
    )
    split_sentences: bool | None = Field(
        None,
        description="translate each text sentence by sentence and rejoin it as written (line breaks, "
        "paragraphs, spacing kept); default: on, except with return_alignment",
    )


class GenerateRequest(DecodeRequest):
    """`/v1/generate`: any model; with `stream` the tokens arrive as Server-Sent Events."""

    model: str
    input: str | list[str]
    stream: bool = Field(False, description="one input only; beam search streams only its final event")


class Output(BaseModel):
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = Field(description="eos | length | stop")
    alternatives: list[str] | None = Field(
        None, description="with num_return_sequences > 1: the next best outputs of beam search, best first"
    )


class GenerationOutput(Output):
    token_ids: list[int]


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class Alignment(BaseModel):
    """Which input tokens each output token attended to: the cross-attention of one decoder layer
    (the manifest's `alignment_layer`), averaged over heads."""

    source_tokens: list[str] = Field(description="the input's tokens as the model read them (language tag, EOS)")
    target_tokens: list[str] = Field(description="the output tokens (as in token_ids: no EOS)")
    weights: list[list[float]] = Field(
        description="one row per target token, one column per source token; each row sums to 1"
    )


class Translation(Output):
    alignment: Alignment | None = Field(None, description='only with "return_alignment": true')


class TranslateResponse(BaseModel):
    model: str
    translations: list[Translation]
    usage: Usage


class SummarizeResponse(BaseModel):
    model: str
    summaries: list[Output]
    usage: Usage


class GenerateResponse(BaseModel):
    model: str
    generations: list[GenerationOutput]
    usage: Usage


class ModelInfo(BaseModel):
    """A served model, in heed's fields and in OpenAI's (`id`, `object`, `created`, `owned_by`),
    so that OpenAI's clients can list and retrieve models too."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when the model directory was written (seconds since the epoch)")
    owned_by: str = "heed"
    name: str
    task: str
    architecture: str
    quantization: str
    parameters: int
    attention: dict[str, Any] = Field(description="encoder and decoder self-attention, heads and K/V heads")
    dimensions: dict[str, int]
    languages: dict[str, Any] = Field(
        description="target and source language codes (and their defaults); names: each code's English name"
    )
    generation: dict[str, Any] = Field(description="the model's decoding defaults")
    limits: dict[str, int] = Field(description="effective limits: the model's, capped by the server's settings")
    ready: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo] = Field(description="the models, as OpenAI lists them (the same as `models`)")
    models: list[ModelInfo]
    defaults: dict[str, str] = Field(
        {}, description='task -> the model a request without "model" goes to (tasks with a model only)'
    )


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None = Field(None, description="the response's X-Request-ID; quote it when reporting a problem")


class ErrorResponse(BaseModel):
    error: ErrorDetail
