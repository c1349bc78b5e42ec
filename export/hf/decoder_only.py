"""What the decoder-only converters (GPT-2, Llama, Qwen2) share: special tokens, the tokenizer, the
chat template and generation defaults read as transformers' `generate` reads them for a
decoder-only model, and the parts of a pre-norm decoder stack that every family lays out alike.

Differences from encoder-decoder checkpoints that matter here: EOS may be a list (chat models end
a turn with a token of their own, e.g. Llama 3's `<|eot_id|>`); there is often no pad token (only
padding uses it, never the output: heed pads with EOS as transformers does); `max_length` and
`min_length` count the prompt, so they are not output lengths (heed bounds an output by the
context instead); the chat template is the tokenizer's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tokenizers import Tokenizer
from torch import Tensor

from export.hf.base import Checkpoint, Conversion, ConversionError, Converter, Weights, first_id
from export.hf.tokenizer import fast_tokenizer
from service.manifest import ChatTemplate, SpecialTokens

PROMPT_COUNTED = ("max_length", "min_length")  # transformers counts the prompt in these for decoder-only models


def eos_ids(ckpt: Checkpoint) -> list[int]:
    value = ckpt.token_id("eos_token_id")
    ids = [int(v) for v in value] if isinstance(value, list) else [] if value is None else [int(value)]
    if not ids:
        raise ConversionError(f"{ckpt.directory}: config has no eos_token_id (heed needs a token that ends outputs)")
    return ids


def without_prompt_lengths(ckpt: Checkpoint) -> Checkpoint:
    """The checkpoint with its generation lengths that count the prompt left out."""

    def drop(values: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if values is None else {k: v for k, v in values.items() if k not in PROMPT_COUNTED}

    return replace(ckpt, config=drop(ckpt.config), generation=drop(ckpt.generation))


def chat_template(ckpt: Checkpoint) -> ChatTemplate | None:
    """The tokenizer's chat template (the default one of several) and the special tokens'
    strings that transformers passes to it; None when the checkpoint has none."""
    from transformers import AutoTokenizer  # heavy import, only where needed

    hf = AutoTokenizer.from_pretrained(str(ckpt.directory))
    if not hf.chat_template:
        return None
    try:
        template = hf.get_chat_template()
    except ValueError as e:  # several templates and none named `default`
        raise ConversionError(f"{ckpt.directory}: no default chat template ({e})") from e
    return ChatTemplate(template=template, tokens=dict(hf.special_tokens_map))


def copy(out: dict[str, Tensor], w: Weights, hf: str, heed: str, bias: bool) -> None:
    out[f"{heed}.weight"] = w.get(f"{hf}.weight")
    if bias:
        out[f"{heed}.bias"] = w.get(f"{hf}.bias")


class DecoderOnlyConverter(Converter):
    def tokenizer(self, ckpt: Checkpoint) -> Tokenizer:
        return fast_tokenizer(ckpt.directory)

    def special_tokens(self, ckpt: Checkpoint, tokenizer: Tokenizer) -> SpecialTokens:
        eos, *more = eos_ids(ckpt)
        pad = first_id(ckpt.token_id("pad_token_id"))
        unk = tokenizer.token_to_id("<unk>")
        return SpecialTokens(pad_id=eos if pad is None else pad, eos_id=eos, extra_eos_ids=more, unk_id=unk)

    def convert(self, ckpt: Checkpoint) -> Conversion:
        conversion = super().convert(without_prompt_lengths(ckpt))
        return replace(conversion, chat=chat_template(ckpt))
