"""A decoder-only Transformer built from a `ModelSpec` without an encoder: enough knobs to express
GPT-2, Llama and Qwen2 exactly, from the same parts as `Seq2SeqModel` (attention family, norms,
feed-forward, embeddings) plus rotary positions.

One entry point serves the prompt and every later step, as the runtime drives it:
`decode(input_ids, positions, past)` -> final hidden states and the cache with the new tokens'
K/V written in. A prompt is one call over an empty cache (prefill); each generated token is one
more call with the cache.
`forward` recomputes a whole sequence without a cache: the reference that cached decoding is
checked against.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from export.attention import KeyBlock, MultiHeadAttention, attend, pattern_mask
from export.cached_attention import cache_step, cached_self_attention
from export.model import CachedSelfAttention, FeedForward, Residual, Stack, attention_module
from export.rope import RotaryEmbedding, apply_rotary
from service.manifest import ModelSpec

Rotation = tuple[Tensor, Tensor]  # cos, sin `[B, 1, T, D]`


class DecoderOnlyLayer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.self_attn = Residual(spec, attention_module(spec))
        self.ffn = Residual(spec, FeedForward(spec))

    def forward(self, x: Tensor, self_attention: CachedSelfAttention) -> tuple[Tensor, Tensor, Tensor]:
        """-> (output, K and V after this step); K is cached rotated, as transformers caches it."""
        kv: list[Tensor] = []

        def self_sublayer(h: Tensor) -> Tensor:
            out, k, v = self_attention(self.self_attn.inner, h)
            kv.extend((k, v))
            return out

        x = self.self_attn(x, self_sublayer)
        return self.ffn(x), kv[0], kv[1]


class DecoderOnlyModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        if not spec.decoder_only:
            raise ValueError("DecoderOnlyModel needs a spec without an encoder (use Seq2SeqModel)")
        if spec.decoder.attention.relative_bias is not None:
            raise ValueError("decoder-only models take rotary, learned or sinusoidal positions, not a relative bias")
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.d_model)
        self.decoder = Stack(spec, spec.decoder, bidirectional=False)
        self.layers = nn.ModuleList(DecoderOnlyLayer(spec) for _ in range(spec.decoder.layers))
        self.rotary = RotaryEmbedding(spec.rotary, spec.head_dim) if spec.rotary is not None else None
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        if spec.tie_lm_head:
            self.lm_head.weight = self.embed.weight

    def decode(
        self, input_ids: Tensor, positions: Tensor, past: list[tuple[Tensor, Tensor]] | None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """New tokens `[B, T]` at absolute `positions` `[B, T]` -> final hidden states `[B, T, d]`
        and each layer's K/V, as `Seq2SeqModel.decode` returns them: the new tokens' without
        `past`, the cache with the new tokens written at their positions with it.

        A batch of prompts of different lengths is right-padded with positions that go on
        counting, so causal masking alone keeps the padding out of every real token's view.
        """
        x = self.decoder.embed(self.embed, input_ids, positions)
        rotation = self.rotary(positions) if self.rotary is not None else None
        kv = []
        for layer, self_attention in zip(self.layers, self._self_attention(positions, past, rotation)):
            x, k, v = layer(x, self_attention)
            kv.append((k, v))
        return self.decoder.finish(x), kv

    def _self_attention(
        self, positions: Tensor, past: list[tuple[Tensor, Tensor]] | None, rotation: Rotation | None
    ) -> list[CachedSelfAttention]:
        spec = self.spec.decoder.attention
        if past is not None:
            step = cache_step(positions, spec, None)
            return [partial(cached_self_attention, past=p, step=step, rotation=rotation) for p in past]
        mask = pattern_mask(spec, positions, positions, causal=True)

        def uncached(attn: MultiHeadAttention, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            q = attn.queries(h)
            k, v = attn.project_kv(h)
            if rotation is not None:
                q, k = apply_rotary(q, *rotation), apply_rotary(k, *rotation)
            out, _ = attend(q, [KeyBlock(k, v, mask)], attn.scale, attn.groups)
            return attn.output(out), k, v

        return [uncached] * len(self.layers)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(hidden * self.spec.lm_head_scale)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Logits of every position of `[B, T]` tokens without a cache (the reference for cached
        decoding); rows padded at the end decode their real tokens as if alone."""
        b, t = input_ids.shape
        positions = torch.arange(t, device=input_ids.device).unsqueeze(0).expand(b, t)
        hidden, _ = self.decode(input_ids, positions, None)
        return self.logits(hidden)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
