"""heed's attention family, written out so that every variant exports to plain ONNX ops.

Shapes: queries `[B, H, Tq, D]`, keys and values `[B, Hkv, Tk, D]` with H a multiple of Hkv
(MHA when equal, GQA when smaller, MQA when 1). K/V heads are never repeated: the query heads
of a group are folded into the query axis, so a cached K/V is read once, not copied H/Hkv times.

Masks are boolean (True = may attend) and built from absolute positions, so the same builder
serves a full sequence, a padded batch and one cached decoding step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from service.manifest import AttentionSpec


def grouped_scores(q: Tensor, k: Tensor, groups: int) -> Tensor:
    """q `[B, H, Tq, D]` x k `[B, Hkv, Tk, D]` -> `[B, H, Tq, Tk]`, H = Hkv * groups; query head h uses
    K/V head h // groups. Reshapes use only static sizes, so the exported graph needs no shape arithmetic."""
    if groups == 1:
        return torch.matmul(q, k.transpose(-1, -2))
    folded = q.unflatten(1, (-1, groups)).flatten(2, 3)  # [B, Hkv, groups * Tq, D]
    return torch.matmul(folded, k.transpose(-1, -2)).unflatten(2, (groups, -1)).flatten(1, 2)


def grouped_apply(probs: Tensor, v: Tensor, groups: int) -> Tensor:
    """probs `[B, H, Tq, Tk]` x v `[B, Hkv, Tk, D]` -> `[B, H, Tq, D]`."""
    if groups == 1:
        return torch.matmul(probs, v)
    folded = probs.unflatten(1, (-1, groups)).flatten(2, 3)
    return torch.matmul(folded, v).unflatten(2, (groups, -1)).flatten(1, 2)


@dataclass
class KeyBlock:
    """One stretch of keys a query attends to: a cache, the new tokens, or an encoder output.

    `mask` and `bias` broadcast to `[B, H, Tq, Tk]`.
    """

    k: Tensor
    v: Tensor
    mask: Tensor | None = None
    bias: Tensor | None = None


def attend(q: Tensor, blocks: list[KeyBlock], scale: float, groups: int = 1) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T * scale + bias) V over the keys of all blocks jointly -> (output, weights).

    Splitting keys into blocks lets a decoding step attend to its cache and to its own new
    keys without concatenating them into one tensor (which would copy the whole cache). The
    weights `[B, H, Tq, sum Tk]` serve alignment (cross-attention); unused, the export drops them.
    """
    scores = []
    for block in blocks:
        s = grouped_scores(q, block.k, groups) * scale
        if block.bias is not None:
            s = s + block.bias
        if block.mask is not None:
            s = torch.where(block.mask, s, torch.finfo(s.dtype).min)
        scores.append(s)
    joint = scores[0] if len(scores) == 1 else torch.cat(scores, dim=-1)
    probs = torch.softmax(joint, dim=-1)
    out = None
    start = 0
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        # The last block runs to the end: a traced `start + width` can freeze the width into the graph.
        part_probs = (
            probs if len(blocks) == 1 else probs[..., start:] if last else probs[..., start : start + block.k.shape[2]]
        )
        part = grouped_apply(part_probs, block.v, groups)
        out = part if out is None else out + part
        start += block.k.shape[2]
    return out, probs


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """softmax(Q K^T / sqrt(d_k) + bias) V, with an optional scale override and boolean mask."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    return attend(q, [KeyBlock(k, v, mask, bias)], scale, q.shape[1] // k.shape[1])[0]


def pattern_mask(spec: AttentionSpec, q_pos: Tensor, k_pos: Tensor, causal: bool) -> Tensor | None:
    """Which keys each query may see by position alone: `[B, 1, Tq, Tk]`, or None when all.

    q_pos `[B, Tq]`, k_pos `[B, Tk]` or `[Tk]` are absolute positions.
    """
    if k_pos.dim() == 1:
        k_pos = k_pos.unsqueeze(0)
    qp = q_pos.unsqueeze(-1)
    kp = k_pos.unsqueeze(-2)
    dist = qp - kp  # [B, Tq, Tk]
    mask = None
    if causal:
        mask = dist >= 0
    if spec.window is not None:
        near = dist <= spec.window if causal else dist.abs() <= spec.window
        if spec.kind == "local_global":
            g = spec.global_tokens
            near = near | (qp < g) | (kp < g)
        mask = near if mask is None else mask & near
    return None if mask is None else mask.unsqueeze(1)


def padding_mask(key_mask: Tensor) -> Tensor:
    """`[B, Tk]` (1 = real token) -> `[B, 1, 1, Tk]` boolean."""
    return (key_mask > 0)[:, None, None, :]


def combine(*masks: Tensor | None) -> Tensor | None:
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


def relative_position_buckets(relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bucketing of key - query distances: exact for small distances, log-spaced up to
    max_distance, one bucket beyond; bidirectional halves the buckets between the two signs."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    large = (
        max_exact
        + (
            torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
        ).long()
    )
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """Learned scalar bias per head and distance bucket (T5).

    Buckets are looked up in a table precomputed over [-max_distance, max_distance] (distances
    beyond fall in the last bucket), so the exported graph does integer indexing only and is
    exactly the bucketing that the PyTorch model computes.
    """

    def __init__(self, n_heads: int, num_buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, n_heads)
        relative = torch.arange(-max_distance, max_distance + 1)
        table = relative_position_buckets(relative, bidirectional, num_buckets, max_distance)
        self.register_buffer("bucket_table", table, persistent=False)

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """q_pos `[B, Tq]`, k_pos `[B, Tk]` or `[Tk]` -> bias `[B, H, Tq, Tk]`."""
        if k_pos.dim() == 1:
            k_pos = k_pos.unsqueeze(0)
        relative = (k_pos.unsqueeze(-2) - q_pos.unsqueeze(-1)).clamp(-self.max_distance, self.max_distance)
        buckets = self.bucket_table[relative + self.max_distance]
        return self.embedding(buckets).permute(0, 3, 1, 2)


class MultiHeadAttention(nn.Module):
    """Projections around `attend`; K/V projection is separate so cross-attention K/V can be
    computed once by the encoder graph and self-attention K/V cached by the runtime."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, d_head: int, bias: bool, scale: float):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head, self.scale = n_heads, n_kv_heads, d_head, scale
        self.q_proj = nn.Linear(d_model, n_heads * d_head, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * d_head, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * d_head, bias=bias)
        self.o_proj = nn.Linear(n_heads * d_head, d_model, bias=bias)

    def _heads(self, x: Tensor, n: int) -> Tensor:
        return x.unflatten(-1, (n, self.d_head)).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._heads(self.k_proj(x), self.n_kv_heads), self._heads(self.v_proj(x), self.n_kv_heads)

    def forward(self, x: Tensor, blocks: list[KeyBlock]) -> tuple[Tensor, Tensor]:
        """-> (output `[B, T, d_model]`, attention weights `[B, H, T, keys]`)."""
        q = self._heads(self.q_proj(x), self.n_heads)
        out, probs = attend(q, blocks, self.scale, self.n_heads // self.n_kv_heads)
        return self.o_proj(out.transpose(1, 2).flatten(2)), probs
