"""Decoding options: what a caller may ask for, and the concrete settings a search runs with.

`GenerationOptions` is the request-facing schema (every field optional, unknown fields refused);
`service.validation.resolve` turns it, with the model's defaults and limits, into a `DecodingConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import InvalidOptions


class GenerationOptions(BaseModel):
    """Sampling is used when `do_sample` is true, or when it is unset and any of temperature
    (> 0), top_k or top_p is given (as in TGI); otherwise greedy (beam_size 1) or beam search."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(None, ge=1)
    min_new_tokens: int | None = Field(None, ge=0)
    beam_size: int | None = Field(None, ge=1)
    do_sample: bool | None = None
    temperature: float | None = Field(None, ge=0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63)
    length_penalty: float | None = Field(None, ge=-10, le=10, allow_inf_nan=False)
    early_stopping: bool | None = None
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0, le=10, allow_inf_nan=False)
    stop: list[str] | None = Field(None, max_length=8)
    num_return_sequences: int | None = Field(
        None, ge=1, description="beam search: also return the next best outputs (at most beam_size in all)"
    )

    @classmethod
    def parse(cls, values: dict[str, Any] | None) -> GenerationOptions:
        try:
            return cls.model_validate(values or {})
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            raise InvalidOptions(f"option '{where}': {first['msg']}") from e


@dataclass(frozen=True)
class DecodingConfig:
    max_new_tokens: int
    min_new_tokens: int
    beam_size: int
    sample: bool
    temperature: float
    top_k: int
    top_p: float
    seed: int | None
    length_penalty: float
    early_stopping: bool
    no_repeat_ngram_size: int
    repetition_penalty: float
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    forced_bos_id: int | None = None
    forced_eos_id: int | None = None
    stop: tuple[str, ...] = field(default=())
    num_return_sequences: int = 1
