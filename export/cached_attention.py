"""Self-attention over the KV cache that writes the new tokens' K/V into the cache itself.

A decoder step's self-attention exports as one ONNX Runtime `com.microsoft.GroupQueryAttention`
node per layer. Its CPU kernel reads only each row's valid positions (up to `seqlens[b]`, the
row's last new position) instead of the whole capacity, and, when the runtime binds a layer's
`present` output to the memory of its `past` input, writes the new K/V into that buffer in place:
no Python copy of the new K/V, no masked reads of unwritten slots (docs/performance.md).

The contract (the kernel's "static cache", which heed always uses): `past` is `[B, Hkv, P, D]`
with P at least the step's `total` positions; row b's slot j holds its token at position j; the
step's T new tokens of row b are at positions `seqlens[b] - T + 1 .. seqlens[b]`. `present` is
`past` with the new K/V written at those slots, and query t of row b attends to the slots up to
its own position (causal), plus an additive `bias` over the `total` slots for a relative position
bias or a windowed pattern. One restriction of the kernel: T > 1 over a non-empty cache needs
B = 1; heed runs T > 1 only from position 0 (a prompt's prefill, the alignment pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from export.attention import (
    MultiHeadAttention,
    RelativePositionBias,
    grouped_apply,
    grouped_scores,
    pattern_mask,
    static_reshape,
)
from export.rope import apply_rotary
from service.manifest import AttentionSpec

GQA = "GroupQueryAttention"
GQA_DOMAIN = "com.microsoft"
GQA_BIAS_INPUT = 10  # attention_bias: after cos_cache, sin_cache and position_ids, which heed leaves out
GQA_HEAD_MULTIPLE = 8  # the kernel's head sizes


@dataclass
class CacheStep:
    """What every layer's cached attention shares in one decoder step."""

    seqlens: Tensor  # [B] int32: each row's last new position
    total: Tensor  # [] int32: the slots any row attends to, max(seqlens) + 1
    bias: Tensor | None  # [B, H or 1, T, total]: relative position bias and pattern mask, additive


def cache_step(positions: Tensor, spec: AttentionSpec, relative: RelativePositionBias | None) -> CacheStep:
    """`positions` `[B, T]` of the new tokens -> the step's `CacheStep`."""
    last = positions[:, -1]
    total = last.max() + 1
    bias = None
    if relative is not None or spec.window is not None:
        slots = torch.arange(total, device=positions.device)
        bias = relative(positions, slots) if relative is not None else None
        mask = pattern_mask(spec, positions, slots, causal=True) if spec.window is not None else None
        if mask is not None:
            zero = torch.zeros((), dtype=torch.float32, device=positions.device)
            bias = torch.where(mask, zero if bias is None else bias, torch.finfo(torch.float32).min)
    return CacheStep(last.to(torch.int32), total.to(torch.int32), bias)


def _flat_rotary(x: Tensor, heads: int, rotation: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate `[B, T, heads * D]` queries or keys; `rotation` is cos, sin `[B, 1, T, D]`."""
    cos, sin = (r.transpose(1, 2) for r in rotation)  # [B, T, 1, D]
    split = x.unflatten(-1, (heads, -1))
    return apply_rotary(split, cos, sin).flatten(-2)


def cached_self_attention(
    attn: MultiHeadAttention,
    h: Tensor,
    past: tuple[Tensor, Tensor],
    step: CacheStep,
    rotation: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The self-attention sublayer of a cached step: `h` `[B, T, d_model]` -> (output `[B, T,
    d_model]`, present K, present V `[B, Hkv, P, D]`). K is cached rotated, as transformers caches it.

    The kernel takes head sizes that are multiples of 8 (every checkpoint heed imports); other
    head sizes export `cache_attention`'s own ops, with the same contract: the runner's binding
    makes their `present` the cache too, element by element (a select per slot), but every step
    then reads and writes the whole buffer."""
    q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
    if rotation is not None:
        q, k = _flat_rotary(q, attn.n_heads, rotation), _flat_rotary(k, attn.n_kv_heads, rotation)
    fused = attn.d_head % GQA_HEAD_MULTIPLE == 0
    out, present_k, present_v = (_FusedCacheAttention.apply if fused else cache_attention)(
        q, k, v, *past, step.seqlens, step.total, step.bias, attn.n_heads, attn.n_kv_heads, attn.scale
    )
    return attn.o_proj(out), present_k, present_v


def cache_attention(q, k, v, past_k, past_v, seqlens, total, bias, heads: int, kv_heads: int, scale: float):
    """GroupQueryAttention's static-cache semantics (the module docstring) in PyTorch: q `[B, T,
    H * D]`, k, v `[B, T, Hkv * D]` -> (output `[B, T, H * D]`, present K, present V). Traceable
    with `total` a tensor."""
    t, groups = q.shape[1], heads // kv_heads
    new_slots = seqlens.long().unsqueeze(1) - t + 1 + torch.arange(t, device=q.device)  # [B, T]
    capacity = torch.arange(past_k.shape[2], device=q.device)
    at = capacity[None, :, None] == new_slots[:, None, :]  # [B, P, T]: slot p holds new token t
    written = at.any(-1)[:, None, :, None]
    place = at.to(q.dtype).unsqueeze(1)  # a one-hot product: exact, and traceable without index_put
    present = [
        torch.where(written, torch.matmul(place, static_reshape(new, 0, 0, kv_heads, -1).transpose(1, 2)), cache)
        for cache, new in ((past_k, k), (past_v, v))
    ]
    slots = torch.arange(total, device=q.device)
    keys, values = (cache.index_select(2, slots) for cache in present)  # a static cache: P >= total
    queries = static_reshape(q, 0, 0, heads, -1).transpose(1, 2)
    scores = grouped_scores(queries, keys, groups) * scale  # [B, H, T, total]
    if bias is not None:
        scores = scores + bias
    visible = slots <= new_slots.unsqueeze(-1)  # [B, T, total]: causal
    scores = torch.where(visible.unsqueeze(1), scores, torch.finfo(scores.dtype).min)
    out = grouped_apply(torch.softmax(scores, dim=-1), values, groups)  # [B, H, T, D]
    return static_reshape(out.transpose(1, 2), 0, 0, -1), present[0], present[1]


class _FusedCacheAttention(torch.autograd.Function):
    """`cache_attention`, exported as the GroupQueryAttention node itself."""

    @staticmethod
    def forward(ctx, q, k, v, past_k, past_v, seqlens, total, bias, heads: int, kv_heads: int, scale: float):
        # an int: while the exporter runs this, ops that read sizes from tensors fail in its tracer
        return cache_attention(q, k, v, past_k, past_v, seqlens, int(total), bias, heads, kv_heads, scale)

    @staticmethod
    def symbolic(g, q, k, v, past_k, past_v, seqlens, total, bias, heads: int, kv_heads: int, scale: float):
        # torch's exporter cannot leave an optional input out, so the bias goes 8th here and
        # `place_attention_bias` moves it to its slot after export
        inputs = [q, k, v, past_k, past_v, seqlens, total] + ([] if bias is None else [bias])
        outputs = g.op(
            f"{GQA_DOMAIN}::{GQA}", *inputs, num_heads_i=heads, kv_num_heads_i=kv_heads, scale_f=scale, outputs=3
        )
        for output, like in zip(outputs, (q, past_k, past_v)):  # the exporter cannot infer a contrib op's shapes
            output.setType(like.type())
        return outputs


def place_attention_bias(nodes) -> None:
    """Move the bias of every GroupQueryAttention node from the 8th input to `attention_bias`."""
    for node in nodes:
        if node.op_type == GQA and node.domain == GQA_DOMAIN and len(node.input) == 8:
            bias = node.input.pop()
            node.input.extend([""] * (GQA_BIAS_INPUT - 7) + [bias])
