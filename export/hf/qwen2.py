"""Qwen2 / Qwen2.5: Llama's layout with biases on the Q, K and V projections only (none on the
output projection or the feed-forward), and a sliding window that applies per layer.

transformers gives each layer a type (`layer_types`, or with `use_sliding_window` the layers from
`max_window_layers` on slide): heed applies one attention pattern to every layer, so a checkpoint
whose layers all attend fully or all slide converts, and one that mixes them is refused.
"""

from __future__ import annotations

from typing import Any

from export.hf.base import Checkpoint, ConversionError, register
from export.hf.llama import LlamaFamilyConverter, sliding_attention
from service.manifest import AttentionSpec


def layer_types(config: dict[str, Any]) -> list[str]:
    """Each layer's attention type, as `Qwen2Config` derives it when the config names none."""
    if config.get("layer_types"):
        return list(config["layer_types"])
    sliding = config.get("use_sliding_window", False) and config.get("sliding_window") is not None
    first = config.get("max_window_layers", 28)
    layers = config["num_hidden_layers"]
    return ["sliding_attention" if sliding and i >= first else "full_attention" for i in range(layers)]


@register
class Qwen2Converter(LlamaFamilyConverter):
    model_types = ("qwen2",)
    architecture = "qwen2"

    def biases(self, config: dict[str, Any]) -> dict[str, bool]:
        return {"qkv_bias": True, "out_bias": False, "ffn_bias": False}

    def attention(self, ckpt: Checkpoint) -> AttentionSpec:
        kinds = set(layer_types(ckpt.config))
        if kinds == {"full_attention"}:
            return AttentionSpec(kind="causal")
        if kinds == {"sliding_attention"}:
            return sliding_attention(ckpt, ckpt.config.get("sliding_window"))
        raise ConversionError(
            f"{ckpt.directory}/config.json: layers mix attention types {sorted(kinds)}; "
            "heed applies one attention pattern to every layer"
        )
