"""Each attention variant against a naive loop reference: one query, one key at a time."""

from __future__ import annotations

import math

import pytest
import torch

from export.attention import (
    KeyBlock,
    RelativePositionBias,
    attend,
    banded_attention,
    combine,
    padding_mask,
    pattern_mask,
    relative_position_buckets,
    scaled_dot_product_attention,
    static_reshape,
)
from export.model import sinusoidal_table
from service.manifest import AttentionSpec


def naive_attention(q, k, v, allowed, bias=None, scale=None):
    """softmax over allowed keys, computed per (batch, head, query) with Python loops."""
    b, h, tq, d = q.shape
    hkv = k.shape[1]
    scale = scale if scale is not None else 1 / math.sqrt(d)
    out = torch.zeros(b, h, tq, d, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            kv = hi // (h // hkv)
            for i in range(tq):
                scores, values = [], []
                for j in range(k.shape[2]):
                    if allowed(bi, i, j):
                        s = float(q[bi, hi, i] @ k[bi, kv, j]) * scale
                        if bias is not None:
                            s += float(bias[bi if bias.shape[0] > 1 else 0, hi, i, j])
                        scores.append(s)
                        values.append(v[bi, kv, j].double())
                weights = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
                out[bi, hi, i] = sum(w * val for w, val in zip(weights, values))
    return out


def naive_allowed(spec: AttentionSpec, causal: bool, lengths: list[int]):
    """The mask rule of each attention kind, written as plain conditions."""

    def allowed(b: int, i: int, j: int) -> bool:
        if j >= lengths[b]:
            return False
        if causal and j > i:
            return False
        if spec.kind in ("local", "local_global"):
            near = (i - j <= spec.window) if causal else abs(i - j) <= spec.window
            if spec.kind == "local_global":
                near = near or i < spec.global_tokens or j < spec.global_tokens
            return near
        return True

    return allowed


VARIANTS = [
    ("full", AttentionSpec(kind="full"), False),
    ("causal", AttentionSpec(kind="causal"), True),
    ("local", AttentionSpec(kind="local", window=2), False),
    ("local-causal", AttentionSpec(kind="local", window=2), True),
    ("local-global", AttentionSpec(kind="local_global", window=1, global_tokens=2), False),
]


@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize(("name", "spec", "causal"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_attention_variant_matches_naive_loop(name, spec, causal, heads):
    torch.manual_seed(0)
    h, hkv = heads
    lengths = [7, 4, 6]
    b, t, d = len(lengths), max(lengths), 8
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, hkv, t, d), torch.randn(b, hkv, t, d)
    key_mask = torch.tensor([[1] * n + [0] * (t - n) for n in lengths])
    pos = torch.arange(t).expand(b, t)
    mask = combine(padding_mask(key_mask), pattern_mask(spec, pos, torch.arange(t), causal))
    got = scaled_dot_product_attention(q, k, v, mask)
    want = naive_attention(q, k, v, naive_allowed(spec, causal, lengths))
    for bi, n in enumerate(lengths):  # padded queries are never read; compare real ones
        assert torch.allclose(got[bi, :, :n].double(), want[bi, :, :n], atol=1e-5), name


def test_scale_override_and_additive_bias():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    bias = torch.randn(1, 2, 3, 5)
    got = scaled_dot_product_attention(q, k, v, bias=bias, scale=1.0)
    want = naive_attention(q, k, v, lambda b, i, j: True, bias=bias, scale=1.0)
    assert torch.allclose(got.double(), want, atol=1e-5)


def naive_bucket(relative: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """T5's bucket rule for a single distance, in plain Python."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        if relative > 0:
            bucket += num_buckets
        n = abs(relative)
    else:
        n = max(-relative, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_match_t5_rule(bidirectional):
    relative = torch.arange(-300, 301)
    got = relative_position_buckets(relative, bidirectional, 32, 128)
    want = [naive_bucket(int(r), bidirectional, 32, 128) for r in relative]
    assert got.tolist() == want


def test_relative_position_bias_looks_up_buckets_beyond_max_distance():
    torch.manual_seed(2)
    bias = RelativePositionBias(n_heads=3, num_buckets=16, max_distance=20, bidirectional=True)
    q_pos = torch.tensor([[0, 5, 90]])
    k_pos = torch.arange(100)
    got = bias(q_pos, k_pos)
    for qi, qp in enumerate(q_pos[0].tolist()):
        for kp in range(100):
            bucket = naive_bucket(kp - qp, True, 16, 20)
            assert torch.equal(got[0, :, qi, kp], bias.embedding.weight[bucket])


def test_sinusoidal_table_is_marian_layout():
    table = sinusoidal_table(10, 6)
    for pos in range(10):
        for j in range(3):
            angle = pos / 10000 ** (2 * j / 6)
            assert table[pos, j] == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 3 + j] == pytest.approx(math.cos(angle), abs=1e-6)


BANDED = [
    (heads, window, g, rel)
    for heads in [(4, 4), (4, 2)]
    for window in [1, 3]
    for g in [0, 2, 4]
    for rel in [False, True]
]


@pytest.mark.parametrize(("heads", "window", "g", "rel"), BANDED)
def test_banded_local_attention_equals_masked(heads, window, g, rel):
    """The O(S * window) encoder path gives exactly the masked O(S^2) result, padding and
    inputs shorter than a block or than the global tokens included."""
    torch.manual_seed(3)
    h, hkv = heads
    spec = AttentionSpec(kind="local_global" if g else "local", window=window, global_tokens=g)
    relative = RelativePositionBias(h, 8, 16, bidirectional=True) if rel else None
    for lengths in ([11, 7, 1], [3, 2, 3], [16, 16, 9], [1, 1, 1]):
        b, t, d = len(lengths), max(lengths), 8
        q, k, v = torch.randn(b, h, t, d), torch.randn(b, hkv, t, d), torch.randn(b, hkv, t, d)
        key_mask = torch.tensor([[1] * n + [0] * (t - n) for n in lengths])
        pos = torch.arange(t).expand(b, t)
        mask = combine(padding_mask(key_mask), pattern_mask(spec, pos, torch.arange(t), False))
        bias = relative(pos[:1], torch.arange(t)) if rel else None
        want = attend(q, [KeyBlock(k, v, mask, bias)], 0.3, h // hkv)[0]
        got = banded_attention(q, k, v, key_mask, spec, 0.3, h // hkv, relative)
        for i, n in enumerate(lengths):
            assert torch.allclose(got[i, :, :n], want[i, :, :n], atol=1e-5), lengths


def test_static_reshape_keeps_zero_dims_and_has_exact_gradients():
    """An autograd Function (for its ONNX export): training depends on its backward."""
    x = torch.randn(2, 3, 6, dtype=torch.double, requires_grad=True)
    assert static_reshape(x, 0, 0, 2, -1).shape == (2, 3, 2, 3)
    assert torch.equal(static_reshape(x, 0, -1), x.reshape(2, 18))
    assert torch.autograd.gradcheck(lambda t: static_reshape(t, 0, 0, 2, -1), (x,))
    assert torch.autograd.gradcheck(lambda t: static_reshape(t, 0, 6, -1), (x,))
