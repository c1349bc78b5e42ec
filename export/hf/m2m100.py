"""M2M100 and NLLB-200 (`model_type` `m2m_100`, `M2M100ForConditionalGeneration`): BART-shaped,
pre-norm with a final LayerNorm on both stacks, ReLU, `sqrt(d_model)` embedding scale, no logits
bias, and fairseq's sinusoidal positions.

Those positions are fairseq's own table (sin half / cos half, frequencies `10000**(-k / (d/2 - 1))`,
a zero column for an odd `d_model`), indexed from `pad_token_id + 1`: heed computes the table and
stores it as learned positions with that offset, so the graph reads exactly transformers' rows.

Both mark the source language with a tag token (`__de__` for M2M100, `deu_Latn` for NLLB), placed
as the checkpoint's tokenizer places it: before the text (M2M100, NLLB) or after its EOS (NLLB with
`legacy_behaviour`); heed leaves it out of `tokenizer.json` and places it per request
(`LanguageTags.source_tag`). The target language is forced as the first generated token.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import Tensor

from export.hf.bart import bart_family_spec, bart_family_state
from export.hf.base import Checkpoint, Conversion, ConversionError, Converter, Weights, register
from export.hf.tokenizer import eos_only, fast_tokenizer, hf_tokenizer, m2m100_tokenizer
from service.manifest import LanguageTags, ModelSpec

NLLB_LANGUAGE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")  # deu_Latn, zho_Hant, ...


def fairseq_sinusoids(rows: int, dim: int, padding_idx: int) -> Tensor:
    """fairseq's (and transformers' M2M100's) sinusoidal position table, computed as they compute it."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.int64).float() * -(math.log(10000) / (half - 1)))
    angles = torch.arange(rows, dtype=torch.int64).float().unsqueeze(1) * frequencies.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles), torch.zeros(rows, dim % 2)], dim=1)
    table[padding_idx] = 0
    return table


def _languages(hf: Any) -> dict[str, int]:
    """Language code -> tag token id: M2M100's `lang_code_to_id` (`de` for `__de__`), or NLLB's
    added tokens shaped like `deu_Latn`."""
    if hasattr(hf, "lang_code_to_id"):
        return {str(code): int(i) for code, i in hf.lang_code_to_id.items()}
    added = hf.backend_tokenizer.get_added_tokens_decoder()
    return {t.content: i for i, t in added.items() if NLLB_LANGUAGE.match(t.content)}


def _source_tag(hf: Any) -> str:
    """Where the checkpoint's tokenizer puts the source language's tag: `before` the text
    (`[lang] text </s>`) or `after` its EOS (`text </s> [lang]`, NLLB's legacy_behaviour)."""
    lang, eos = hf.convert_tokens_to_ids(_tag_token(hf, hf.src_lang)), hf.eos_token_id
    if (hf.prefix_tokens, hf.suffix_tokens) == ([lang], [eos]):
        return "before"
    if (hf.prefix_tokens, hf.suffix_tokens) == ([], [eos, lang]):
        return "after"
    raise ConversionError(
        f"the tokenizer marks the source language as {hf.prefix_tokens} text {hf.suffix_tokens}; "
        "heed supports [lang] text </s> and text </s> [lang]"
    )


def _tag_token(hf: Any, code: str) -> str:
    return hf.get_lang_token(code) if hasattr(hf, "get_lang_token") else code


@register
class M2M100Converter(Converter):
    model_types = ("m2m_100",)
    architecture = "m2m100"

    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        config = ckpt.config
        if config.get("pad_token_id") is None:
            raise ConversionError(f"{ckpt.directory}/config.json: missing pad_token_id (it sets the positions)")
        return bart_family_spec(
            config,
            positions="learned",
            position_offset=int(config["pad_token_id"]) + 1,
            pre_norm=True,
            final_norm=True,
            final_logits_bias=False,
        )

    def state_dict(self, ckpt: Checkpoint, spec: ModelSpec, weights: Weights) -> dict[str, Tensor]:
        w = Weights(weights.tensors, prefix="model.")
        rows = spec.max_positions + spec.position_offset
        table = fairseq_sinusoids(rows, spec.d_model, int(ckpt.config["pad_token_id"]))
        for stack in ("encoder", "decoder"):
            w.tensors[f"{stack}.embed_positions.weight"] = table  # a buffer checkpoints do not store
        return bart_family_state(spec, w)

    def tokenizer(self, ckpt: Checkpoint) -> Tokenizer:
        hf = hf_tokenizer(ckpt.directory)
        if hasattr(hf, "backend_tokenizer"):  # NLLB
            return eos_only(fast_tokenizer(ckpt.directory), str(hf.eos_token))
        if not hasattr(hf, "lang_token_to_id"):
            raise ConversionError(f"{ckpt.directory}: tokenizer {type(hf).__name__} is neither M2M100's nor NLLB's")
        return m2m100_tokenizer(ckpt.directory, hf)

    def languages(self, ckpt: Checkpoint, tokenizer: Tokenizer) -> LanguageTags | None:
        hf = hf_tokenizer(ckpt.directory)
        tokens = _languages(hf)
        if not tokens:
            raise ConversionError(f"{ckpt.directory}: the tokenizer has no language tokens")
        forced = ckpt.setting("forced_bos_token_id")
        return LanguageTags(
            placement="decoder_forced",
            tokens=dict(sorted(tokens.items())),
            default=next((code for code, i in tokens.items() if i == forced), None),
            source_tag=_source_tag(hf),
            default_source=hf.src_lang if hf.src_lang in tokens else None,
        )

    def convert(self, ckpt: Checkpoint) -> Conversion:
        conversion = super().convert(ckpt)
        nllb = conversion.languages is not None and any(NLLB_LANGUAGE.match(c) for c in conversion.languages.tokens)
        return replace(conversion, architecture="nllb") if nllb else conversion
