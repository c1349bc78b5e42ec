"""A decoder-only Transformer built from a `ModelSpec` without an encoder: enough knobs to express
GPT-2, Llama and Qwen2 exactly, from the same parts as `Seq2SeqModel` (attention family, norms,
feed-forward, embeddings) plus rotary positions.

One entry point serves the prompt and every later step, as the runtime drives it:
`decode(input_ids, positions, past)` -> final hidden states and the new tokens' K/V. A prompt is
one call with an empty cache (prefill); each generated token is one more call with the cache.
`forward` recomputes a whole sequence without a cache: the reference that cached decoding is
checked against.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from export.attention import KeyBlock, MultiHeadAttention, attend, combine, pattern_mask
from export.model import FeedForward, Residual, Stack, attention_module
from export.rope import RotaryEmbedding, apply_rotary
from service.manifest import ModelSpec

Rotation = tuple[Tensor, Tensor]  # cos, sin `[B, 1, T, D]`


class DecoderOnlyLayer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.self_attn = Residual(spec, attention_module(spec))
        self.ffn = Residual(spec, FeedForward(spec))

    def forward(
        self, x: Tensor, past: KeyBlock | None, new_mask: Tensor | None, rotation: Rotation | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """-> (output, new K, new V); K is cached rotated, as transformers caches it."""
        attn: MultiHeadAttention = self.self_attn.inner
        new_kv: list[Tensor] = []

        def self_sublayer(h: Tensor) -> Tensor:
            q = attn.queries(h)
            k, v = attn.project_kv(h)
            if rotation is not None:
                q, k = apply_rotary(q, *rotation), apply_rotary(k, *rotation)
            new_kv.extend((k, v))
            blocks = [KeyBlock(k, v, new_mask)]
            out, _ = attend(q, blocks if past is None else [past, *blocks], attn.scale, attn.groups)
            return attn.output(out)

        x = self.self_attn(x, self_sublayer)
        return self.ffn(x), new_kv[0], new_kv[1]


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
        and their K/V per layer.

        `past` holds each layer's cached K/V `[B, Hkv, P, D]`; slot j of row b is valid when
        j < positions[b, 0], as for `Seq2SeqModel.decode`. A batch of prompts of different lengths
        is right-padded with positions that go on counting, so causal masking alone keeps the
        padding out of every real token's view.
        """
        spec = self.spec.decoder.attention
        x = self.decoder.embed(self.embed, input_ids, positions)
        new_mask = pattern_mask(spec, positions, positions, causal=True)
        rotation = self.rotary(positions) if self.rotary is not None else None
        past_mask = None
        if past is not None:
            slots = torch.arange(past[0][0].shape[2], device=input_ids.device)
            valid = (slots.unsqueeze(0) < positions[:, :1])[:, None, None, :]
            past_mask = combine(valid, pattern_mask(spec, positions, slots, causal=True))
        new_kv = []
        for i, layer in enumerate(self.layers):
            past_block = None if past is None else KeyBlock(past[i][0], past[i][1], past_mask)
            x, k, v = layer(x, past_block, new_mask, rotation)
            new_kv.append((k, v))
        return self.decoder.finish(x), new_kv

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
