"""Llama (and the checkpoints transformers loads as `LlamaForCausalLM`), and Mistral: pre-norm
RMSNorm decoder with rotary positions, a SwiGLU feed-forward (`down(silu(gate(x)) * up(x))`),
grouped K/V heads, and optional biases (`attention_bias` on Q/K/V/O, `mlp_bias`).

RoPE is read from `rope_parameters` (transformers 5) or `rope_theta` and `rope_scaling` (older
configs): the default, `linear` and `llama3` scalings are expressed exactly; scalings that depend
on the sequence length or scale attention (`dynamic`, `yarn`, `longrope`) and partial rotary
dimensions are refused. Mistral's `sliding_window` W (a query sees the W keys up to itself) is a
causal local window of radius W - 1.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from export.hf.base import Checkpoint, ConversionError, Weights, activation, register
from export.hf.decoder_only import DecoderOnlyConverter, copy
from service.manifest import AttentionSpec, ModelSpec, Rotary, StackSpec

ROPE_SCALINGS = {"default": "none", "linear": "linear", "llama3": "llama3"}


def rotary(ckpt: Checkpoint) -> Rotary:
    config = ckpt.config
    params: dict[str, Any] = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if any(isinstance(v, dict) for v in params.values()):
        raise ConversionError(f"{ckpt.directory}/config.json: RoPE parameters per layer type are not supported")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_SCALINGS:
        raise ConversionError(
            f"{ckpt.directory}/config.json: RoPE scaling {kind!r} is not supported "
            f"(supported: {', '.join(ROPE_SCALINGS)})"
        )
    partial = params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ConversionError(f"{ckpt.directory}/config.json: partial_rotary_factor {partial} is not supported")
    values: dict[str, Any] = {
        "theta": params.get("rope_theta", config.get("rope_theta", 10000.0)),
        "scaling": ROPE_SCALINGS[kind],
    }
    if kind != "default":
        values["factor"] = params["factor"]
    if kind == "llama3":
        values |= {
            "low_freq_factor": params["low_freq_factor"],
            "high_freq_factor": params["high_freq_factor"],
            "original_max_positions": params.get(
                "original_max_position_embeddings", config.get("max_position_embeddings")
            ),
        }
    return Rotary(**values)


def sliding_attention(ckpt: Checkpoint, window: int | None) -> AttentionSpec:
    """Causal attention, or a causal local window for a sliding window of `window` keys."""
    if window is None:
        return AttentionSpec(kind="causal")
    if window < 2:
        raise ConversionError(f"{ckpt.directory}/config.json: sliding_window {window} is not supported (minimum 2)")
    return AttentionSpec(kind="local", window=window - 1)


class LlamaFamilyConverter(DecoderOnlyConverter):
    """Llama's layout; subclasses choose the biases and the attention pattern."""

    def attention(self, ckpt: Checkpoint) -> AttentionSpec:
        return AttentionSpec(kind="causal")

    def biases(self, config: dict[str, Any]) -> dict[str, bool]:
        bias = bool(config.get("attention_bias", False))
        return {"qkv_bias": bias, "out_bias": bias, "ffn_bias": bool(config.get("mlp_bias", False))}

    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        config = ckpt.config
        heads = config["num_attention_heads"]
        return ModelSpec(
            vocab_size=config["vocab_size"],
            d_model=config["hidden_size"],
            n_heads=heads,
            n_kv_heads=config.get("num_key_value_heads") or heads,
            d_head=config.get("head_dim") or config["hidden_size"] // heads,
            d_ff=config["intermediate_size"],
            encoder=None,
            decoder=StackSpec(layers=config["num_hidden_layers"], attention=self.attention(ckpt)),
            activation=activation(config.get("hidden_act", "silu")),
            gated_ffn=True,
            norm="rmsnorm",
            norm_eps=config.get("rms_norm_eps", 1e-6),
            pre_norm=True,
            final_norm=True,
            positions="rotary",
            rotary=rotary(ckpt),
            max_positions=config.get("max_position_embeddings", 2048),
            tie_lm_head=bool(config.get("tie_word_embeddings", False)),
            **self.biases(config),
        )

    def state_dict(self, ckpt: Checkpoint, spec: ModelSpec, weights: Weights) -> dict[str, Tensor]:
        w = Weights(weights.tensors, prefix="model.")
        out = {"embed.weight": w.get("embed_tokens.weight"), "decoder.final_norm.weight": w.get("norm.weight")}
        for i in range(spec.decoder.layers):
            hf, heed = f"layers.{i}", f"layers.{i}"
            for name in ("q_proj", "k_proj", "v_proj"):
                copy(out, w, f"{hf}.self_attn.{name}", f"{heed}.self_attn.inner.{name}", spec.qkv_bias)
            copy(out, w, f"{hf}.self_attn.o_proj", f"{heed}.self_attn.inner.o_proj", spec.attention_out_bias)
            for hf_name, heed_name in (("gate_proj", "fc_in"), ("up_proj", "fc_gate"), ("down_proj", "fc_out")):
                copy(out, w, f"{hf}.mlp.{hf_name}", f"{heed}.ffn.inner.{heed_name}", spec.ffn_bias)
            out[f"{heed}.self_attn.norm.weight"] = w.get(f"{hf}.input_layernorm.weight")
            out[f"{heed}.ffn.norm.weight"] = w.get(f"{hf}.post_attention_layernorm.weight")
        if not spec.tie_lm_head:
            out["lm_head.weight"] = w.get("lm_head.weight")
        return out


@register
class LlamaConverter(LlamaFamilyConverter):
    model_types = ("llama",)
    architecture = "llama"


@register
class MistralConverter(LlamaFamilyConverter):
    model_types = ("mistral",)
    architecture = "mistral"

    def attention(self, ckpt: Checkpoint) -> AttentionSpec:
        return sliding_attention(ckpt, ckpt.config.get("sliding_window"))
