"""One validation step: a protocol-neutral `RawRequest` becomes a typed, valid `ValidRequest`
for one model, or a `RequestError` that names what to change.

Every protocol maps its fields to a `RawRequest`; the front door validates it against the model
(manifest, tokenizer) and the limits, before anything is queued. `heed generate` validates the
same way, without the HTTP server's caps. The effective limits of a model are `ModelLimits.of`,
the one rule that both validation and `/v1/models` use. The characters of every text must pass
`service.characters.check_text`, the one rule that language detection and markup parsing apply too.

A request is charged to its caller's character allowance here, once validated (`ALLOWANCE`):
every protocol's request passes this step exactly once, so no protocol module has to remember to.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from service.characters import check_text
from service.documents import Document, split
from service.errors import InputTooLong, InvalidInput, InvalidOptions
from service.languages import language, match
from service.manifest import GenerationDefaults, Manifest
from service.options import DecodingConfig, GenerationOptions
from service.settings import EngineConfig
from service.tokenizer import TextCodec


@dataclass(frozen=True)
class RawRequest:
    """What a caller asks of a model, in any protocol."""

    texts: list[str]
    options: GenerationOptions = field(default_factory=GenerationOptions)
    target_lang: str | None = None
    source_lang: str | None = None
    truncate: bool = False
    timeout: float | None = None
    stream: bool = False
    return_alignment: bool = False
    split_sentences: bool = False  # translated sentence by sentence, rejoined as written (service/documents.py)
    line_breaks: bool = True  # with split_sentences: a line break ends a sentence (`documents.split`)
    special_tokens: bool = True  # False: the text holds them already (a prompt rendered with a chat template)


class Allowance(Protocol):
    """What the caller of a request may still send: the HTTP server's per-API-key character quota
    (service/http/quotas.py), set for the request's context by the guard. Offline use has none."""

    def charge(self, characters: int) -> None:
        """Count a validated request's characters, or raise a `RequestError` (the quota is spent)
        without counting them."""


ALLOWANCE: ContextVar[Allowance | None] = ContextVar("heed_allowance", default=None)


@dataclass(frozen=True)
class RequestCaps:
    """The HTTP server's caps on one request (`HEED_*` settings); None: no cap (offline use)."""

    max_texts: int | None = None
    max_input_chars: int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class ModelLimits:
    """The limits a request to one model runs under: the model's own, capped by the engine's."""

    max_input_tokens: int
    max_output_tokens: int
    max_beam_size: int
    kv_rows: int

    @classmethod
    def of(cls, manifest: Manifest, config: EngineConfig) -> ModelLimits:
        return cls(
            max_input_tokens=manifest.limits.max_input_tokens,
            max_output_tokens=min(manifest.limits.max_output_tokens, config.max_new_tokens),
            max_beam_size=min(config.max_beam_size, config.kv_rows),
            kv_rows=config.kv_rows,
        )


@dataclass(frozen=True)
class ValidRequest:
    inputs: list[list[int]]  # token ids per text, or per sentence: language tag included, cut to the limit
    config: DecodingConfig
    timeout: float  # seconds from admission to answer; inf offline
    stream: bool = False
    return_alignment: bool = False
    documents: list[Document] | None = None  # the texts' sentences, when split: `inputs` are theirs, in order


def validate(
    request: RawRequest, manifest: Manifest, codec: TextCodec, limits: ModelLimits, caps: RequestCaps = RequestCaps()
) -> ValidRequest:
    texts = request.texts
    if not texts:
        raise InvalidInput("no input text given")
    if caps.max_texts is not None and len(texts) > caps.max_texts:
        raise InputTooLong(f"{len(texts)} texts in one request; this server takes at most {caps.max_texts}")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"input text {i} is empty")
        check_text(text, f"input text {i}")
    chars = sum(len(t) for t in texts)
    if caps.max_input_chars is not None and chars > caps.max_input_chars:
        raise InputTooLong(f"{chars} characters of input; this server takes at most {caps.max_input_chars}")
    if request.stream and len(texts) != 1:
        raise InvalidInput('"stream": true takes exactly one input text')
    sources = manifest.source_languages
    if request.source_lang is not None and sources and match(request.source_lang, sources) is None:
        raise InvalidOptions(f"source_lang {request.source_lang!r} is not one of this model's: {', '.join(sources)}")
    cfg = resolve(request.options, manifest.generation, limits)
    prefix, cfg = _target_language(manifest, request.target_lang, cfg)
    before, after = _source_tag(manifest, request.source_lang)
    if request.split_sentences and (request.return_alignment or request.stream):
        raise InvalidOptions("split_sentences cannot be combined with return_alignment or stream (one sequence each)")
    source = language(request.source_lang) if request.source_lang else None  # `deu_Latn` -> `de`, for the splitter
    documents = [split(text, source, request.line_breaks) for text in texts] if request.split_sentences else None
    owners = [i for i, d in enumerate(documents) for _ in d.sentences] if documents else list(range(len(texts)))
    pieces = [s for d in documents for s in d.sentences] if documents else texts
    inputs = codec.encode(pieces, prefix + before, after, request.special_tokens)
    for j, ids in enumerate(inputs):
        if len(ids) > limits.max_input_tokens:
            if not request.truncate:
                what = f"a sentence of input text {owners[j]}" if documents else f"input text {owners[j]}"
                raise InputTooLong(
                    f"{what} has {len(ids)} tokens; this model takes at most {limits.max_input_tokens} "
                    '(send "truncate": true to cut it)'
                )
            kept = 1 + len(after)  # EOS and a source tag after it
            inputs[j] = ids[: limits.max_input_tokens - kept] + ids[-kept:]
    timeouts = [t for t in (request.timeout, caps.timeout) if t is not None]
    timeout = min(timeouts) if timeouts else math.inf
    allowance = ALLOWANCE.get()
    if allowance is not None:  # last: a request refused for anything else costs nothing
        allowance.charge(chars)
    return ValidRequest(inputs, cfg, timeout, request.stream, request.return_alignment, documents)


def resolve(options: GenerationOptions, defaults: GenerationDefaults, limits: ModelLimits) -> DecodingConfig:
    """The request's options over the model's defaults, checked against its limits.

    Whether to sample: the request's `do_sample`; else sampling when it gives a sampling setting
    (`GenerationOptions`), greedy when it sets temperature 0 or asks for beams; else the model's
    `do_sample` (a chat checkpoint samples, as vLLM and transformers decode it by default). A
    sampler's temperature, top_k and top_p are the request's, else the model's.
    """

    def pick(name: str, fallback: Any = None) -> Any:
        value = getattr(options, name)
        return value if value is not None else getattr(defaults, name, fallback)

    max_new = pick("max_new_tokens")
    cap = limits.max_output_tokens
    if options.max_new_tokens is not None and max_new > cap:
        raise InvalidOptions(f"option 'max_new_tokens': {max_new} is over this model's limit of {cap}")
    max_new = min(max_new, cap)
    min_new = pick("min_new_tokens")
    if min_new > max_new:
        raise InvalidOptions(f"option 'min_new_tokens': {min_new} is more than max_new_tokens ({max_new})")
    beam = pick("beam_size")
    if beam > limits.max_beam_size:
        raise InvalidOptions(f"option 'beam_size': {beam} is over this server's limit of {limits.max_beam_size}")
    sampling_asked = (options.temperature or 0) > 0 or options.top_k is not None or options.top_p is not None
    greedy_asked = options.temperature == 0 or (options.beam_size or 1) > 1
    if options.do_sample is not None:
        sample = options.do_sample
    else:
        sample = sampling_asked or (defaults.do_sample and not greedy_asked)
    if sample and options.beam_size is not None and options.beam_size > 1:
        raise InvalidOptions("option 'beam_size': beam search cannot be combined with sampling")
    if sample:
        beam = 1
    returned = options.num_return_sequences or 1
    if returned > beam:
        raise InvalidOptions(f"option 'num_return_sequences': {returned} is more than beam_size ({beam})")
    temperature = pick("temperature")
    if sample and temperature == 0:
        raise InvalidOptions("option 'temperature': must be > 0 when sampling")
    return DecodingConfig(
        max_new_tokens=max_new,
        min_new_tokens=min_new,
        beam_size=beam,
        sample=sample,
        temperature=temperature,
        top_k=pick("top_k"),
        top_p=pick("top_p"),
        seed=options.seed,
        length_penalty=pick("length_penalty"),
        early_stopping=pick("early_stopping"),
        no_repeat_ngram_size=pick("no_repeat_ngram_size"),
        repetition_penalty=pick("repetition_penalty"),
        bad_words_ids=tuple(tuple(w) for w in defaults.bad_words_ids),
        forced_bos_id=defaults.forced_bos_id,
        forced_eos_id=defaults.forced_eos_id,
        stop=tuple(options.stop or ()),
        num_return_sequences=returned,
    )


def _target_language(manifest: Manifest, target: str | None, cfg: DecodingConfig) -> tuple[list[int], DecodingConfig]:
    """The source prefix ids and the config for the requested target language."""
    tags = manifest.languages
    if tags is None:
        if target is not None:
            raise InvalidOptions(f"model '{manifest.name}' has no target languages; leave target_lang out")
        return [], cfg
    code = tags.default if target is None else match(target, tags.tokens)
    if code is None:
        raise _unknown_language(manifest, "target_lang", target)
    if tags.placement == "source_prefix":
        return [*tags.lead_ids, tags.tokens[code]], cfg
    return [], replace(cfg, forced_bos_id=tags.tokens[code])


def _source_tag(manifest: Manifest, source: str | None) -> tuple[list[int], list[int]]:
    """The ids before and after the text's own that mark its language, for models that read one
    (M2M100, NLLB: `LanguageTags.source_tag`)."""
    tags = manifest.languages
    if tags is None or tags.source_tag is None:
        return [], []
    code = tags.default_source if source is None else match(source, tags.tokens)
    if code is None:
        raise _unknown_language(manifest, "source_lang", source)
    tag = [tags.tokens[code]]
    return (tag, []) if tags.source_tag == "before" else ([], tag)


def _unknown_language(manifest: Manifest, field: str, asked: str | None) -> InvalidOptions:
    """The refusal of a language the model cannot take: one it does not know, or none where it
    has no default (an NLLB checkpoint without `forced_bos_token_id`), which must say that the
    field is needed rather than that `None` is not a language."""
    choices = ", ".join(sorted(manifest.languages.tokens))
    if asked is None:
        return InvalidOptions(f"model '{manifest.name}' needs {field}; its languages are: {choices}")
    return InvalidOptions(f"{field} {asked!r} is not one of this model's languages: {choices}")
