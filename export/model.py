"""A seq2seq Transformer built from a `ModelSpec`: enough knobs to express Marian, BART/mBART,
Pegasus and T5 exactly, and heed's own models.

The model has the two entry points the runtime needs, which the ONNX graphs wrap:
- `encode(input_ids, attention_mask)` -> per decoder layer, cross-attention K and V;
- `decode(input_ids, positions, past, cross, source_mask)` -> logits, the new tokens' K/V and alignment.
`forward` runs a whole teacher-forced sequence without a cache: the reference that cached
decoding is checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from export.attention import (
    KeyBlock,
    MultiHeadAttention,
    RelativePositionBias,
    banded_attention,
    padding_mask,
    pattern_mask,
)
from export.cached_attention import cache_step, cached_self_attention
from service.manifest import ModelSpec, StackSpec


class RMSNorm(nn.Module):
    """T5's LayerNorm, and Llama's and Qwen2's RMSNorm: scale only, no mean subtraction, no bias."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def make_norm(spec: ModelSpec) -> nn.Module:
    if spec.norm == "rmsnorm":
        return RMSNorm(spec.d_model, spec.norm_eps)
    return nn.LayerNorm(spec.d_model, eps=spec.norm_eps)


ACTIVATIONS = {
    "relu": nn.functional.relu,
    "gelu": nn.functional.gelu,
    "gelu_tanh": lambda x: nn.functional.gelu(x, approximate="tanh"),
    "silu": nn.functional.silu,
}


class FeedForward(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.act = ACTIVATIONS[spec.activation]
        self.gated = spec.gated_ffn
        self.fc_in = nn.Linear(spec.d_model, spec.d_ff, bias=spec.ffn_bias)
        self.fc_gate = nn.Linear(spec.d_model, spec.d_ff, bias=spec.ffn_bias) if spec.gated_ffn else None
        self.fc_out = nn.Linear(spec.d_ff, spec.d_model, bias=spec.ffn_bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.fc_in(x))
        if self.fc_gate is not None:
            h = h * self.fc_gate(x)
        return self.fc_out(h)


def attention_module(spec: ModelSpec) -> MultiHeadAttention:
    scale = spec.attention_scale if spec.attention_scale is not None else spec.head_dim**-0.5
    return MultiHeadAttention(
        spec.d_model, spec.n_heads, spec.kv_heads, spec.head_dim, spec.qkv_bias, scale, spec.attention_out_bias
    )


class Residual(nn.Module):
    """A sublayer with its norm, pre- or post-norm. `forward` takes the sublayer as a function
    of the (normed) input, since attention needs extra arguments (keys, masks, cache)."""

    def __init__(self, spec: ModelSpec, inner: nn.Module):
        super().__init__()
        self.inner, self.norm, self.pre_norm = inner, make_norm(spec), spec.pre_norm

    def forward(self, x: Tensor, fn=None) -> Tensor:
        fn = fn or self.inner
        if self.pre_norm:
            return x + fn(self.norm(x))
        return self.norm(x + fn(x))


SelfAttention = Callable[[MultiHeadAttention, Tensor], Tensor]
# -> (output, K, V): the new tokens' without a cache, the whole cache after the step with one
CachedSelfAttention = Callable[[MultiHeadAttention, Tensor], tuple[Tensor, Tensor, Tensor]]


class EncoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.self_attn = Residual(spec, attention_module(spec))
        self.ffn = Residual(spec, FeedForward(spec))

    def forward(self, x: Tensor, self_attention: SelfAttention) -> Tensor:
        x = self.self_attn(x, lambda h: self_attention(self.self_attn.inner, h))
        return self.ffn(x)


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.self_attn = Residual(spec, attention_module(spec))
        self.cross_attn = Residual(spec, attention_module(spec))
        self.ffn = Residual(spec, FeedForward(spec))

    def forward(self, x: Tensor, self_attention: CachedSelfAttention, cross: KeyBlock) -> tuple[Tensor, ...]:
        """-> (output, self-attention K and V after this step, cross-attention weights averaged
        over heads `[B, T, S]`)."""
        kv: list[Tensor] = []

        def self_sublayer(h: Tensor) -> Tensor:
            out, k, v = self_attention(self.self_attn.inner, h)
            kv.extend((k, v))
            return out

        alignment: list[Tensor] = []

        def cross_sublayer(h: Tensor) -> Tensor:
            out, probs = self.cross_attn.inner(h, [cross])
            alignment.append(probs.mean(dim=1))
            return out

        x = self.self_attn(x, self_sublayer)
        x = self.cross_attn(x, cross_sublayer)
        return self.ffn(x), kv[0], kv[1], alignment[0]


class Stack(nn.Module):
    """Shared parts of encoder and decoder: positions, embedding norm, final norm, bias."""

    def __init__(self, spec: ModelSpec, stack: StackSpec, bidirectional: bool):
        super().__init__()
        self.spec, self.stack = spec, stack
        rel = stack.attention.relative_bias
        self.relative_bias = (
            RelativePositionBias(spec.n_heads, rel.num_buckets, rel.max_distance, bidirectional) if rel else None
        )
        if spec.positions in ("learned", "sinusoidal"):
            table = nn.Embedding(spec.max_positions + spec.position_offset, spec.d_model)
            if spec.positions == "sinusoidal":
                table.weight.data.copy_(sinusoidal_table(spec.max_positions + spec.position_offset, spec.d_model))
                table.weight.requires_grad_(False)
            self.positions = table
        else:
            self.positions = None
        self.embedding_norm = make_norm(spec) if spec.embedding_norm else None
        self.final_norm = make_norm(spec) if spec.final_norm else None
        self.embed_scale = math.sqrt(spec.d_model) if spec.scale_embedding else 1.0

    def embed(self, tokens: nn.Embedding, input_ids: Tensor, positions: Tensor) -> Tensor:
        x = tokens(input_ids) * self.embed_scale
        if self.positions is not None:
            x = x + self.positions(positions + self.spec.position_offset)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        return x

    def finish(self, x: Tensor) -> Tensor:
        return self.final_norm(x) if self.final_norm is not None else x


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    """Marian/Pegasus layout: sines of all frequencies in the first half, cosines in the second."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angles = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    half = dim // 2 + dim % 2
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, :half] = torch.sin(angles[:, 0::2])
    table[:, half:] = torch.cos(angles[:, 1::2])
    return table.float()


class Seq2SeqModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.decoder_only:
            raise ValueError("Seq2SeqModel needs a spec with an encoder (use DecoderOnlyModel)")
        self.spec = spec
        self.shared = nn.Embedding(spec.vocab_size, spec.d_model)
        self.decoder_embed = self.shared if spec.shared_embeddings else nn.Embedding(spec.vocab_size, spec.d_model)
        self.encoder = Stack(spec, spec.encoder, bidirectional=True)
        self.encoder_layers = nn.ModuleList(EncoderLayer(spec) for _ in range(spec.encoder.layers))
        self.decoder = Stack(spec, spec.decoder, bidirectional=False)
        self.decoder_layers = nn.ModuleList(DecoderLayer(spec) for _ in range(spec.decoder.layers))
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        if spec.tie_lm_head:
            self.lm_head.weight = self.shared.weight
        self.register_buffer("final_logits_bias", torch.zeros(1, spec.vocab_size), persistent=True)

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Source tokens -> cross-attention (K, V) per decoder layer, each `[B, Hkv, S, D]`."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.encoder.embed(self.shared, input_ids, positions.unsqueeze(0))
        spec, relative = self.spec.encoder.attention, self.encoder.relative_bias
        if spec.kind in ("local", "local_global"):

            def self_attention(attn: MultiHeadAttention, h: Tensor) -> Tensor:
                k, v = attn.project_kv(h)
                out = banded_attention(attn.queries(h), k, v, attention_mask, spec, attn.scale, attn.groups, relative)
                return attn.output(out)

        else:
            pos = positions.unsqueeze(0)
            mask = padding_mask(attention_mask)
            bias = relative(pos, positions) if relative is not None else None

            def self_attention(attn: MultiHeadAttention, h: Tensor) -> Tensor:
                k, v = attn.project_kv(h)
                return attn(h, [KeyBlock(k, v, mask, bias)])[0]

        for layer in self.encoder_layers:
            x = layer(x, self_attention)
        hidden = self.encoder.finish(x)
        return [layer.cross_attn.inner.project_kv(hidden) for layer in self.decoder_layers]

    def decode(
        self,
        input_ids: Tensor,
        positions: Tensor,
        past: list[tuple[Tensor, Tensor]] | None,
        cross: list[tuple[Tensor, Tensor]],
        source_mask: Tensor,
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]], Tensor]:
        """New tokens `[B, T]` at absolute `positions` `[B, T]` -> logits `[B, T, V]`, each layer's
        self-attention K/V and cross-attention weights averaged over heads `[B, L, T, S]` (alignment).

        Without `past`, the tokens are whole sequences from position 0 and the K/V returned are
        theirs. With it, each layer's cache `[B, Hkv, P, D]` (row b's slot j holds its token at
        position j; slots from positions[b, 0] on may hold anything: the runtime preallocates the
        cache and never clears it), and the K/V returned are that cache with the new tokens
        written at their positions (`export/cached_attention.py`).
        """
        x = self.decoder.embed(self.decoder_embed, input_ids, positions)
        layers = self._self_attention(positions, past)
        cross_mask = padding_mask(source_mask)
        kv, alignment = [], []
        for i, layer in enumerate(self.decoder_layers):
            x, k, v, weights = layer(x, layers[i], KeyBlock(cross[i][0], cross[i][1], cross_mask))
            kv.append((k, v))
            alignment.append(weights)
        return self.logits(self.decoder.finish(x)), kv, torch.stack(alignment, dim=1)

    def _self_attention(self, positions: Tensor, past: list[tuple[Tensor, Tensor]] | None) -> list[CachedSelfAttention]:
        """Each decoder layer's self-attention for this step."""
        spec, relative = self.spec.decoder.attention, self.decoder.relative_bias
        if past is not None:
            step = cache_step(positions, spec, relative)
            return [partial(cached_self_attention, past=layer_past, step=step) for layer_past in past]
        mask = pattern_mask(spec, positions, positions, causal=True)
        bias = relative(positions, positions) if relative is not None else None

        def uncached(attn: MultiHeadAttention, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            k, v = attn.project_kv(h)
            return attn(h, [KeyBlock(k, v, mask, bias)])[0], k, v

        return [uncached] * len(self.decoder_layers)

    def logits(self, hidden: Tensor) -> Tensor:
        logits = self.lm_head(hidden * self.spec.lm_head_scale)
        # Most checkpoints' bias is zeros (Marian's, BART's after training): not adding it keeps an Add
        # over the whole vocabulary out of the exported graph (5% of a beam step at 128 rows).
        return logits + self.final_logits_bias if bool(self.final_logits_bias.any()) else logits

    def forward(self, input_ids: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor) -> Tensor:
        """Teacher-forced logits without a cache (the reference for cached decoding)."""
        cross = self.encode(input_ids, attention_mask)
        b, t = decoder_input_ids.shape
        positions = torch.arange(t, device=input_ids.device).unsqueeze(0).expand(b, t)
        logits, _, _ = self.decode(decoder_input_ids, positions, None, cross, attention_mask)
        return logits

    def parameter_count(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
