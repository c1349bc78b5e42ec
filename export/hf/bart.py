"""BART, mBART and Pegasus (and the BART-shaped parts of Marian, which reuses `bart_family_state`).

BART: post-norm, learned positions with offset 2, an embedding LayerNorm, GELU, final logits bias.
mBART: the same with pre-norm and a final LayerNorm on both stacks; its target language is forced
as the first generated token (`decoder_forced`), as `forced_bos_token_id` does in transformers.
"""

from __future__ import annotations

import re
from typing import Any

from tokenizers import Tokenizer
from torch import Tensor

from export.hf.base import Checkpoint, ConversionError, Converter, Weights, activation, register
from export.hf.tokenizer import fast_tokenizer
from service.manifest import LanguageTags, ModelSpec, StackSpec

MBART_LANGUAGE = re.compile(r"^[a-z]{2,3}_[A-Z][A-Za-z]{1,3}$")  # en_XX, fr_XX, zh_CN, ...


def same_both_stacks(config: dict[str, Any], *keys: str) -> None:
    """heed's spec has one head count and FFN width for both stacks; refuse checkpoints that differ."""
    for key in keys:
        enc, dec = config.get(f"encoder_{key}"), config.get(f"decoder_{key}")
        if enc != dec:
            raise ConversionError(f"encoder_{key} ({enc}) differs from decoder_{key} ({dec}); heed needs them equal")


def bart_family_spec(config: dict[str, Any], **overrides: Any) -> ModelSpec:
    """The fields BART, mBART, Marian and Pegasus configs share."""
    same_both_stacks(config, "attention_heads", "ffn_dim")
    base = dict(
        vocab_size=config["vocab_size"],
        d_model=config["d_model"],
        n_heads=config["encoder_attention_heads"],
        d_ff=config["encoder_ffn_dim"],
        encoder=StackSpec(layers=config["encoder_layers"]),
        decoder=StackSpec(layers=config["decoder_layers"], attention={"kind": "causal"}),
        activation=activation(config.get("activation_function", "gelu")),
        scale_embedding=bool(config.get("scale_embedding", False)),
        max_positions=config["max_position_embeddings"],
        tie_lm_head=bool(config.get("tie_word_embeddings", True)),
        final_logits_bias=True,
    )
    return ModelSpec.model_validate(base | overrides)


def _copy(out: dict[str, Tensor], w: Weights, hf: str, heed: str, bias: bool = True) -> None:
    out[f"{heed}.weight"] = w.get(f"{hf}.weight")
    if bias:
        out[f"{heed}.bias"] = w.get(f"{hf}.bias")


def bart_family_state(spec: ModelSpec, w: Weights) -> dict[str, Tensor]:
    """BART-style HF names (`encoder.layers.0.self_attn.q_proj`, `fc1`, ...) -> heed's names."""
    out = {"shared.weight": w.get("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    if not spec.shared_embeddings:
        out["decoder_embed.weight"] = w.get("decoder.embed_tokens.weight")
    for stack in ("encoder", "decoder"):
        if spec.positions == "learned" or w.has(f"{stack}.embed_positions.weight"):
            out[f"{stack}.positions.weight"] = w.get(f"{stack}.embed_positions.weight")
        if spec.embedding_norm:
            _copy(out, w, f"{stack}.layernorm_embedding", f"{stack}.embedding_norm")
        if spec.final_norm:
            _copy(out, w, f"{stack}.layer_norm", f"{stack}.final_norm")
        layers = spec.encoder.layers if stack == "encoder" else spec.decoder.layers
        attentions = [("self_attn", "self_attn")] + ([("encoder_attn", "cross_attn")] if stack == "decoder" else [])
        for i in range(layers):
            hf, heed = f"{stack}.layers.{i}", f"{stack}_layers.{i}"
            for hf_attn, heed_attn in attentions:
                for proj, name in (
                    ("q_proj", "q_proj"),
                    ("k_proj", "k_proj"),
                    ("v_proj", "v_proj"),
                    ("out_proj", "o_proj"),
                ):
                    _copy(out, w, f"{hf}.{hf_attn}.{proj}", f"{heed}.{heed_attn}.inner.{name}")
                _copy(out, w, f"{hf}.{hf_attn}_layer_norm", f"{heed}.{heed_attn}.norm")
            _copy(out, w, f"{hf}.fc1", f"{heed}.ffn.inner.fc_in")
            _copy(out, w, f"{hf}.fc2", f"{heed}.ffn.inner.fc_out")
            _copy(out, w, f"{hf}.final_layer_norm", f"{heed}.ffn.norm")
    if not spec.tie_lm_head:
        out["lm_head.weight"] = w.get("lm_head.weight")
    if spec.final_logits_bias:
        out["final_logits_bias"] = w.get("final_logits_bias")
    return out


@register
class BartConverter(Converter):
    model_types = ("bart",)
    architecture = "bart"

    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        return bart_family_spec(ckpt.config, positions="learned", position_offset=2, embedding_norm=True)

    def state_dict(self, ckpt: Checkpoint, spec: ModelSpec, weights: Weights) -> dict[str, Tensor]:
        return bart_family_state(spec, Weights(weights.tensors, prefix="model."))

    def tokenizer(self, ckpt: Checkpoint) -> Tokenizer:
        return fast_tokenizer(ckpt.directory)


@register
class MBartConverter(BartConverter):
    model_types = ("mbart",)
    architecture = "mbart"

    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        return bart_family_spec(
            ckpt.config, positions="learned", position_offset=2, embedding_norm=True, pre_norm=True, final_norm=True
        )

    def languages(self, ckpt: Checkpoint, tokenizer: Tokenizer) -> LanguageTags | None:
        tokens = {t: i for t, i in tokenizer.get_vocab(with_added_tokens=True).items() if MBART_LANGUAGE.match(t)}
        if not tokens:
            return None
        forced = ckpt.setting("forced_bos_token_id")
        default = next((t for t, i in tokens.items() if i == forced), None)
        return LanguageTags(placement="decoder_forced", tokens=dict(sorted(tokens.items())), default=default)


@register
class PegasusConverter(BartConverter):
    """Pegasus: pre-norm with a final LayerNorm like mBART, but sinusoidal positions (Marian's
    layout) and no embedding LayerNorm; decoding starts with the pad token."""

    model_types = ("pegasus",)
    architecture = "pegasus"

    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        return bart_family_spec(ckpt.config, positions="sinusoidal", pre_norm=True, final_norm=True)
