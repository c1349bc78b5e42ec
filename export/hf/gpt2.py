"""GPT-2: pre-norm LayerNorm decoder with learned absolute positions, GELU (tanh) feed-forward, biases
everywhere, and an LM head tied to the token embeddings.

Its projections are `Conv1D` layers (`x @ W + b`, W stored `[in, out]`): heed's linear layers store
`[out, in]`, so every weight is transposed, and the fused Q/K/V projection `c_attn` is split in
three. Layer-indexed attention scaling (`scale_attn_by_inverse_layer_idx`) and cross-attention
layers are refused; `reorder_and_upcast_attn` only changes float16 numerics and is ignored.
"""

from __future__ import annotations

from torch import Tensor

from export.hf.base import Checkpoint, ConversionError, Weights, activation, register
from export.hf.decoder_only import DecoderOnlyConverter
from service.manifest import ModelSpec, StackSpec


@register
class GPT2Converter(DecoderOnlyConverter):
    model_types = ("gpt2",)
    architecture = "gpt2"

    def spec(self, ckpt: Checkpoint, weights: Weights) -> ModelSpec:
        config = ckpt.config
        for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
            if config.get(flag):
                raise ConversionError(f"{ckpt.directory}/config.json: {flag}=true is not supported")
        d_model = config["n_embd"]
        return ModelSpec(
            vocab_size=config["vocab_size"],
            d_model=d_model,
            n_heads=config["n_head"],
            d_ff=config.get("n_inner") or 4 * d_model,
            encoder=None,
            decoder=StackSpec(layers=config["n_layer"], attention={"kind": "causal"}),
            activation=activation(config.get("activation_function", "gelu_new")),
            norm_eps=config.get("layer_norm_epsilon", 1e-5),
            pre_norm=True,
            final_norm=True,
            positions="learned",
            max_positions=config.get("n_positions", 1024),
            attention_scale=None if config.get("scale_attn_weights", True) else 1.0,
            tie_lm_head=bool(config.get("tie_word_embeddings", True)),
        )

    def state_dict(self, ckpt: Checkpoint, spec: ModelSpec, weights: Weights) -> dict[str, Tensor]:
        w = Weights(weights.tensors, prefix="transformer.")
        d = spec.d_model
        out = {
            "embed.weight": w.get("wte.weight"),
            "decoder.positions.weight": w.get("wpe.weight"),
            "decoder.final_norm.weight": w.get("ln_f.weight"),
            "decoder.final_norm.bias": w.get("ln_f.bias"),
        }
        for i in range(spec.decoder.layers):
            hf, heed = f"h.{i}", f"layers.{i}"
            qkv_weight, qkv_bias = w.get(f"{hf}.attn.c_attn.weight"), w.get(f"{hf}.attn.c_attn.bias")
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"{heed}.self_attn.inner.{name}.weight"] = qkv_weight[:, j * d : (j + 1) * d].t()
                out[f"{heed}.self_attn.inner.{name}.bias"] = qkv_bias[j * d : (j + 1) * d]
            conv1d = (
                ("attn.c_proj", "self_attn.inner.o_proj"),
                ("mlp.c_fc", "ffn.inner.fc_in"),
                ("mlp.c_proj", "ffn.inner.fc_out"),
            )
            for hf_name, heed_name in conv1d:
                out[f"{heed}.{heed_name}.weight"] = w.get(f"{hf}.{hf_name}.weight").t()
                out[f"{heed}.{heed_name}.bias"] = w.get(f"{hf}.{hf_name}.bias")
            for hf_norm, heed_norm in (("ln_1", "self_attn.norm"), ("ln_2", "ffn.norm")):
                out[f"{heed}.{heed_norm}.weight"] = w.get(f"{hf}.{hf_norm}.weight")
                out[f"{heed}.{heed_norm}.bias"] = w.get(f"{hf}.{hf_norm}.bias")
        if not spec.tie_lm_head:
            out["lm_head.weight"] = w.get("lm_head.weight")
        return out
