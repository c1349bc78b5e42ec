"""Decoding options: what a caller may ask for, and the concrete settings a search runs with.

`GenerationOptions` is the request-facing schema (every field optional, unknown fields refused);
`resolve` merges it with the model's manifest defaults and the server's limits into a
`DecodingConfig`, raising `InvalidOptions` with a message that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import InvalidOptions
from service.manifest import GenerationDefaults, Limits


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


@dataclass(frozen=True)
class ServerLimits:
    """Caps the operator sets above the model's own limits (settings `HEED_MAX_*`)."""

    max_new_tokens: int = 512
    max_beam_size: int = 8


def resolve(
    options: GenerationOptions, defaults: GenerationDefaults, limits: Limits, server: ServerLimits = ServerLimits()
) -> DecodingConfig:
    def pick(name: str, fallback: Any = None) -> Any:
        value = getattr(options, name)
        return value if value is not None else getattr(defaults, name, fallback)

    max_new = pick("max_new_tokens")
    cap = min(limits.max_output_tokens, server.max_new_tokens)
    if options.max_new_tokens is not None and max_new > cap:
        raise InvalidOptions(f"option 'max_new_tokens': {max_new} is over this model's limit of {cap}")
    max_new = min(max_new, cap)
    min_new = pick("min_new_tokens")
    if min_new > max_new:
        raise InvalidOptions(f"option 'min_new_tokens': {min_new} is more than max_new_tokens ({max_new})")
    beam = pick("beam_size")
    if beam > server.max_beam_size:
        raise InvalidOptions(f"option 'beam_size': {beam} is over the limit of {server.max_beam_size}")
    sampling_asked = (options.temperature or 0) > 0 or options.top_k is not None or options.top_p is not None
    sample = options.do_sample if options.do_sample is not None else sampling_asked
    if sample and options.beam_size is not None and options.beam_size > 1:
        raise InvalidOptions("option 'beam_size': beam search cannot be combined with sampling")
    if sample:
        beam = 1
    temperature = options.temperature if options.temperature is not None else 1.0
    if sample and temperature == 0:
        raise InvalidOptions("option 'temperature': must be > 0 when sampling")
    return DecodingConfig(
        max_new_tokens=max_new,
        min_new_tokens=min_new,
        beam_size=beam,
        sample=sample,
        temperature=temperature,
        top_k=options.top_k or 0,
        top_p=options.top_p if options.top_p is not None else 1.0,
        seed=options.seed,
        length_penalty=pick("length_penalty"),
        early_stopping=pick("early_stopping"),
        no_repeat_ngram_size=pick("no_repeat_ngram_size"),
        repetition_penalty=pick("repetition_penalty"),
        bad_words_ids=tuple(tuple(w) for w in defaults.bad_words_ids),
        forced_bos_id=defaults.forced_bos_id,
        forced_eos_id=defaults.forced_eos_id,
        stop=tuple(options.stop or ()),
    )
