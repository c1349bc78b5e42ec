"""Rotary position embeddings (RoPE), computed as transformers computes them for Llama and Qwen2.

Each pair of dimensions (i, i + d/2) of a query or key at position p is rotated by the angle
p * f_i, with inverse frequencies f_i = theta^(-2i/d), optionally rescaled (`Rotary.scaling`).
A query-key product then depends only on their distance. The frequencies are constants of the
graph; cos and sin are computed in the graph from the `positions` input (a table over the whole
context would be as large as the model for long contexts), in float32 as transformers does, so
the rotation is the same for a prompt, a cached step and a full recomputation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from service.manifest import Rotary


def inverse_frequencies(rotary: Rotary, dim: int) -> Tensor:
    """`[dim / 2]` float32 inverse frequencies, rescaled by the rotary's scaling."""
    base = 1.0 / (rotary.theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim))
    if rotary.scaling == "linear":
        return base / rotary.factor
    if rotary.scaling == "llama3":
        return _llama3(base, rotary)
    return base


def _llama3(base: Tensor, rotary: Rotary) -> Tensor:
    """Llama 3.1: wavelengths longer than the pretraining context / low_freq_factor are stretched by
    `factor`, those shorter than context / high_freq_factor kept, those between interpolated."""
    context, low, high, factor = (
        rotary.original_max_positions,
        rotary.low_freq_factor,
        rotary.high_freq_factor,
        rotary.factor,
    )
    wavelength = 2 * math.pi / base
    stretched = torch.where(wavelength > context / low, base / factor, base)
    smooth = (context / wavelength - low) / (high - low)
    between = (1 - smooth) * stretched / factor + smooth * stretched
    medium = ~(wavelength < context / high) * ~(wavelength > context / low)
    return torch.where(medium, between, stretched)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last axis (the pairs RoPE rotates)."""
    half = x.shape[-1] // 2  # static: the head size
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, rotary: Rotary, head_dim: int):
        super().__init__()
        self.register_buffer("inv_freq", inverse_frequencies(rotary, head_dim), persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """`[B, T]` absolute positions -> cos, sin `[B, 1, T, D]` (broadcast over heads)."""
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [B, T, D/2]
        angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)
        return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys `[B, H, T, D]` to their positions."""
    return x * cos + rotate_half(x) * sin
