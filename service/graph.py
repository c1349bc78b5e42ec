"""The graph contract: the names and the cache feed protocol of the ONNX graphs of a model
directory (encoder and decoder; a decoder-only model has its decoder alone). The exporter writes
graphs to it, the runner feeds them by it, the parity check reads them with it; nothing else
spells these names.

encoder.onnx   input_ids [B, S], attention_mask [B, S]
               -> cross_key_i, cross_value_i [B, Hkv, S, D] for each decoder layer i
decoder.onnx   input_ids [B, T], positions [B, T], source_mask [B, S],
               past_key_i, past_value_i [B, Hkv, P, D], cross_key_i, cross_value_i [B, Hkv, S, D],
               top_k [1], with_logprobs [1] (bool)
               -> logits [B, T, V], present_key_i, present_value_i [B, Hkv, P, D],
                  cross_attention [B, L, T, S] (each layer's cross-attention weights, mean over heads),
                  top_ids, top_logits, top_logprobs [B, T, K] (each position's K best tokens, best first)

decoder.onnx of a decoder-only model (no encoder.onnx)
               input_ids [B, T], positions [B, T], logit_index [B, L],
               past_key_i, past_value_i [B, Hkv, P, D], top_k [1], with_logprobs [1] (bool)
               -> logits [B, L, V] (at the new tokens `logit_index` names), present_key_i,
                  present_value_i [B, Hkv, P, D], top_ids, top_logits, top_logprobs [B, L, K]
               One graph serves the prompt (prefill: T = the prompt, L = 0, no logits computed) and
               each step (T = 1, L = 1); the LM head runs only where logits are asked for.

Cache feed protocol: K/V are separate inputs per layer, in the order of `cache_inputs` (every
layer's past K, V, then every layer's cross K, V), so that the runtime can hand ONNX Runtime
contiguous slices of its preallocated buffers. Past slot j of row b holds the token at position j;
a step's new tokens are at the positions that follow row b's cached ones, and P must hold every
row's last new position. `present_*` (`present_outputs`, in the order of the past inputs) is the
past buffer with the new tokens' K/V written at their positions: the runtime binds each to its past
input's memory, and the graph writes the cache in place (export/cached_attention.py,
docs/kv-cache.md).
"""

from __future__ import annotations

ENCODER_INPUTS = ("input_ids", "attention_mask")
DECODER_INPUTS = ("input_ids", "positions", "source_mask")
DECODER_ONLY_INPUTS = ("input_ids", "positions", "logit_index")
CHOICE_INPUTS = ("top_k", "with_logprobs")
LOGITS = "logits"
CROSS_ATTENTION = "cross_attention"
TOP_OUTPUTS = ("top_ids", "top_logits", "top_logprobs")


def cache_names(prefix: str, layers: int) -> list[str]:
    """`{prefix}_key_i`, `{prefix}_value_i` for each layer, in feed order."""
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def encoder_outputs(layers: int) -> list[str]:
    return cache_names("cross", layers)


def past_inputs(layers: int) -> list[str]:
    return cache_names("past", layers)


def cross_inputs(layers: int) -> list[str]:
    return cache_names("cross", layers)


def cache_inputs(layers: int, decoder_only: bool = False) -> list[str]:
    """The decoder's cache inputs in feed order: the KV cache's buffers (self, then cross) map onto them."""
    return past_inputs(layers) if decoder_only else past_inputs(layers) + cross_inputs(layers)


def step_inputs(decoder_only: bool) -> tuple[str, ...]:
    """The decoder's inputs besides the cache and the token choice."""
    return DECODER_ONLY_INPUTS if decoder_only else DECODER_INPUTS


def present_outputs(layers: int) -> list[str]:
    return cache_names("present", layers)
