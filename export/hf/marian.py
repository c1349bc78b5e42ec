"""MarianMT (Helsinki-NLP opus-mt-*): BART-shaped, post-norm, with sinusoidal positions in the
sin-half/cos-half layout, `sqrt(d_model)` embedding scale, SiLU ("swish"), final logits bias.

Multilingual-target checkpoints carry `>>xx<<` tags in their vocabulary; the tag starts the source
(`source_prefix`). Decoding starts with the pad token, which is also banned from the output.
"""

from __future__ import annotations

from tokenizers import Tokenizer
from torch import Tensor

from export.hf.bart import bart_family_spec, bart_family_state
from export.hf.base import Checkpoint, ConversionError, Converter, Weights, register
from export.hf.tokenizer import LANGUAGE_TAG, marian_tokenizer
from service.manifest import LanguageTags, ModelSpec


@register
class MarianConverter(Converter):
    model_types = ("marian",)
    architecture = "marian"

    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        config = ckpt.config
        decoder_vocab = config.get("decoder_vocab_size") or config["vocab_size"]
        if decoder_vocab != config["vocab_size"]:
            raise ConversionError(
                f"decoder_vocab_size ({decoder_vocab}) differs from vocab_size ({config['vocab_size']}); "
                "heed needs one vocabulary for both sides"
            )
        shared = bool(config.get("share_encoder_decoder_embeddings", True))
        tied = bool(config.get("tie_word_embeddings", True))
        # Untied-but-tied-to-the-decoder (separate embeddings) is expressed by copying the decoder's table.
        return bart_family_spec(config, positions="sinusoidal", shared_embeddings=shared, tie_lm_head=tied and shared)

    def state_dict(self, ckpt: Checkpoint, spec: ModelSpec, weights: Weights) -> dict[str, Tensor]:
        w = Weights(weights.tensors, prefix="model.")
        if not spec.tie_lm_head and not w.has("lm_head.weight") and ckpt.config.get("tie_word_embeddings", True):
            w.tensors["lm_head.weight"] = w.get("decoder.embed_tokens.weight")
        return bart_family_state(spec, w)

    def tokenizer(self, ckpt: Checkpoint) -> Tokenizer:
        return marian_tokenizer(ckpt.directory)

    def languages(self, ckpt: Checkpoint, tokenizer: Tokenizer) -> LanguageTags | None:
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        tokens = {t[2:-2]: i for t, i in vocab.items() if LANGUAGE_TAG.match(t)}
        return LanguageTags(placement="source_prefix", tokens=dict(sorted(tokens.items()))) if tokens else None
