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


class _StaticReshape(torch.autograd.Function):
    """`reshape` to an ONNX-style shape (0 keeps the input's dimension, -1 is inferred), exported
    as one Reshape to that constant. Traced, a reshape by sizes read from `x.shape` becomes
    Shape/Slice/Concat arithmetic that ONNX Runtime recomputes at every decoder step (its cost:
    docs/performance.md)."""

    @staticmethod
    def forward(ctx, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        ctx.input_shape = x.shape
        return x.reshape([x.shape[i] if size == 0 else size for i, size in enumerate(shape)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad.reshape(ctx.input_shape), None

    @staticmethod
    def symbolic(g, x, shape: tuple[int, ...]):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))


def static_reshape(x: Tensor, *shape: int) -> Tensor:
    """`x` reshaped to `shape`, where 0 keeps that dimension of `x` and -1 is inferred (at most
    one); the other sizes must not depend on the input (head counts, head size)."""
    return _StaticReshape.apply(x, shape)


def grouped_scores(q: Tensor, k: Tensor, groups: int) -> Tensor:
    """q `[B, H, Tq, D]` x k `[B, Hkv, Tk, D]` -> `[B, H, Tq, Tk]`, H = Hkv * groups; query head h uses
    K/V head h // groups. Reshapes use only static sizes, so the exported graph needs no shape arithmetic."""
    if groups == 1:
        return torch.matmul(q, k.transpose(-1, -2))
    heads = int(q.shape[1])  # static: a head count
    kv_heads = heads // groups
    folded = static_reshape(q, 0, kv_heads, -1, 0)  # [B, Hkv, groups * Tq, D]
    return static_reshape(torch.matmul(folded, k.transpose(-1, -2)), 0, heads, -1, 0)


def grouped_apply(probs: Tensor, v: Tensor, groups: int) -> Tensor:
    """probs `[B, H, Tq, Tk]` x v `[B, Hkv, Tk, D]` -> `[B, H, Tq, D]`."""
    if groups == 1:
        return torch.matmul(probs, v)
    heads = int(probs.shape[1])
    kv_heads = heads // groups
    folded = static_reshape(probs, 0, kv_heads, -1, 0)
    return static_reshape(torch.matmul(folded, v), 0, heads, -1, 0)


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


def _pad_to(x: Tensor, dim: int, length: Tensor, size: int) -> Tensor:
    """Zero-pad `x` along `dim` to `length` (<= its length + size). Written with a fixed-size pad and
    a slice, because the exporter's tracer freezes Python arithmetic on sizes into constants."""
    keep = [-1] * x.dim()  # -1: keep that size (sizes read off x would be frozen by the tracer)
    keep[dim] = size
    zeros = (x.narrow(dim, 0, 1) * 0).expand(*keep)  # zeros_like would be traced as a constant
    return _first(torch.cat([x, zeros], dim=dim), dim, length)


def _first(x: Tensor, dim: int, length: Tensor) -> Tensor:
    """The first `length` entries along `dim` (a gather: traced slices of tensor length get frozen)."""
    return x.index_select(dim, torch.arange(length, device=x.device))


def _blocks(x: Tensor, size: int) -> Tensor:
    """`[B, H, S, D]` (S a multiple of size) -> `[B, H, S/size, size, D]`."""
    return x.unflatten(2, (-1, size))


def _band(blocks: Tensor) -> Tensor:
    """Each block with its left and right neighbours (zeros beyond the ends): `[..., n, c, D]` -> `[..., n, 3c, D]`."""
    padded = nn.functional.pad(blocks, (0, 0, 0, 0, 1, 1))
    return torch.cat([padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]], dim=3)


def _grouped_5d(q: Tensor, groups: int) -> Tensor:
    """`[B, H, ...]` -> `[B, Hkv, groups, ...]` so that K/V `[B, Hkv, 1, ...]` broadcast over a group."""
    return q.unflatten(1, (-1, groups))


def banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor,
    spec: AttentionSpec,
    scale: float,
    groups: int = 1,
    relative: RelativePositionBias | None = None,
) -> Tensor:
    """Bidirectional local (radius w) or local + global attention in O(S * (3w + g)), not O(S^2).

    Exactly `attend` with `pattern_mask(spec)` and the padding mask: the sequence is cut into
    blocks of w positions, and a query in block b sees keys in blocks b-1, b, b+1 (all within
    its radius fall there), masked to the radius; the g global keys are one more block seen by
    every query, and the g global queries attend to the whole sequence.
    """
    c, g = spec.window, spec.global_tokens
    s = torch._shape_as_tensor(key_mask)[1]  # from the graph input: shapes of intermediates may get folded
    padded = s + (c - s % c) % c  # a multiple of c, as a traced tensor
    positions = torch.arange(padded, device=q.device)
    as_blocks = positions[None, None, :, None]  # the [B, H, S, D] layout `_blocks` and `_band` take
    valid = _pad_to(key_mask, 1, padded, c) > 0  # [B, Sp]
    qb = _grouped_5d(_blocks(_pad_to(q, 2, padded, c), c), groups)  # [B, Hkv, G, n, c, D]
    kb = _band(_blocks(_pad_to(k, 2, padded, c), c)).unsqueeze(2)  # [B, Hkv, 1, n, 3c, D]
    vb = _band(_blocks(_pad_to(v, 2, padded, c), c)).unsqueeze(2)
    key_pos = _band(_blocks(as_blocks, c))[0, 0, :, :, 0]  # [n, 3c]; 0 where beyond the ends
    key_ok = _band(_blocks(valid[:, None, :, None], c))[:, 0, :, :, 0]  # [B, n, 3c]
    query_pos = _blocks(as_blocks, c)[0, 0, :, :, 0]  # [n, c]
    near = (query_pos.unsqueeze(-1) - key_pos.unsqueeze(-2)).abs() <= c  # [n, c, 3c]
    band_mask = near.unsqueeze(0) & key_ok.unsqueeze(2) & (key_pos >= g).unsqueeze(1).unsqueeze(0)
    scores = torch.matmul(qb, kb.transpose(-1, -2)) * scale  # [B, Hkv, G, n, c, 3c]
    if relative is not None:  # [n, c, 3c, H] -> [1, Hkv, G, n, c, 3c]
        band_bias = relative.lookup(key_pos.unsqueeze(-2) - query_pos.unsqueeze(-1))
        scores = scores + band_bias.permute(3, 0, 1, 2).unflatten(0, (-1, groups)).unsqueeze(0)
    scores = torch.where(band_mask[:, None, None], scores, torch.finfo(scores.dtype).min)
    blocks = [scores]
    if g:
        # The first g keys, zero-padded (and masked) when the input is shorter than g.
        kg = _pad_to(k, 2, s + g, g)[:, :, :g].unsqueeze(2)  # [B, Hkv, 1, g, D]
        vg = _pad_to(v, 2, s + g, g)[:, :, :g].unsqueeze(2)
        flat_q = qb.flatten(3, 4)  # [B, Hkv, G, Sp, D]
        global_scores = torch.matmul(flat_q, kg.transpose(-1, -2)) * scale  # [B, Hkv, G, Sp, g]
        if relative is not None:
            global_bias = relative(positions.unsqueeze(0), torch.arange(g, device=q.device))
            global_scores = global_scores + global_bias.unflatten(1, (-1, groups))
        global_ok = (_pad_to(key_mask, 1, s + g, g)[:, :g] > 0)[:, None, None, None, :]
        global_scores = torch.where(global_ok, global_scores, torch.finfo(scores.dtype).min)
        blocks.append(global_scores.unflatten(3, (-1, c)))  # [B, Hkv, G, n, c, g]
    probs = torch.softmax(torch.cat(blocks, dim=-1) if g else scores, dim=-1)
    out = torch.matmul(probs[..., : 3 * c], vb)
    if g:
        out = out + torch.matmul(probs[..., 3 * c :].flatten(3, 4), vg).unflatten(3, (-1, c))
    out = _first(out.flatten(3, 4).flatten(1, 2), 2, s)  # [B, H, S, D]
    if not g:
        return out
    keys = _first(positions, 0, s)
    bias = relative(keys[:g].unsqueeze(0), keys) if relative is not None else None
    global_rows, _ = attend(q[:, :, :g], [KeyBlock(k, v, padding_mask(key_mask), bias)], scale, groups)
    return torch.cat([global_rows, out[:, :, g:]], dim=2)


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

    def lookup(self, relative: Tensor) -> Tensor:
        """key - query distances `[...]` -> bias `[..., H]`."""
        relative = relative.clamp(-self.max_distance, self.max_distance)
        return self.embedding(self.bucket_table[relative + self.max_distance])

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """q_pos `[B, Tq]`, k_pos `[B, Tk]` or `[Tk]` -> bias `[B, H, Tq, Tk]`."""
        if k_pos.dim() == 1:
            k_pos = k_pos.unsqueeze(0)
        return self.lookup(k_pos.unsqueeze(-2) - q_pos.unsqueeze(-1)).permute(0, 3, 1, 2)


class MultiHeadAttention(nn.Module):
    """Projections around `attend`; K/V projection is separate so cross-attention K/V can be
    computed once by the encoder graph and self-attention K/V cached by the runtime."""

    def __init__(
        self, d_model: int, n_heads: int, n_kv_heads: int, d_head: int, bias: bool, scale: float, out_bias: bool
    ):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head, self.scale = n_heads, n_kv_heads, d_head, scale
        self.q_proj = nn.Linear(d_model, n_heads * d_head, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * d_head, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * d_head, bias=bias)
        self.o_proj = nn.Linear(n_heads * d_head, d_model, bias=out_bias)

    def _heads(self, x: Tensor, n: int) -> Tensor:
        return static_reshape(x, 0, 0, n, -1).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._heads(self.k_proj(x), self.n_kv_heads), self._heads(self.v_proj(x), self.n_kv_heads)

    @property
    def groups(self) -> int:
        return self.n_heads // self.n_kv_heads

    def queries(self, x: Tensor) -> Tensor:
        return self._heads(self.q_proj(x), self.n_heads)

    def output(self, heads: Tensor) -> Tensor:
        """`[B, H, T, D]` -> `[B, T, d_model]`."""
        return self.o_proj(static_reshape(heads.transpose(1, 2), 0, 0, -1))

    def forward(self, x: Tensor, blocks: list[KeyBlock]) -> tuple[Tensor, Tensor]:
        """-> (output `[B, T, d_model]`, attention weights `[B, H, T, keys]`)."""
        out, probs = attend(self.queries(x), blocks, self.scale, self.groups)
        return self.output(out), probs
