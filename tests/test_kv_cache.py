"""The cache manager keeps rows compact without losing or mixing any row's contents."""

from __future__ import annotations

import numpy as np

from service.kv_cache import KVCache


def fill(cache: KVCache, slot, value: float) -> None:
    for buf in (*cache.self_kv, *cache.cross_kv):
        buf[slot.row] = value


def row_value(cache: KVCache, slot) -> set[float]:
    return {float(v) for buf in (*cache.self_kv, *cache.cross_kv) for v in np.unique(buf[slot.row])}


def test_release_moves_last_rows_into_holes_and_keeps_contents():
    cache = KVCache(layers=2, kv_heads=2, head_dim=4, max_rows=8, chunk=4)
    slots = cache.allocate(5)
    for i, s in enumerate(slots):
        fill(cache, s, float(i))
    cache.release([slots[1], slots[3]])
    assert cache.used == 3
    assert sorted(s.row for s in cache.slots) == [0, 1, 2]
    for i in (0, 2, 4):
        assert row_value(cache, slots[i]) == {float(i)}
    assert slots[1].row == -1


def test_growth_keeps_running_rows_and_reset_when_empty():
    cache = KVCache(layers=1, kv_heads=1, head_dim=2, max_rows=100, chunk=4)
    slots = cache.allocate(3)
    for i, s in enumerate(slots):
        fill(cache, s, float(i + 1))
    cache.ensure(rows=3, past=9, source=6)
    assert cache.past_cap == 12 and cache.source_cap == 8
    for i, s in enumerate(slots):
        assert cache.self_kv[0][s.row, :, :4].min() == i + 1  # old region kept
    cache.release(slots)
    assert cache.used == 0 and cache.past_cap == 0


def test_growing_the_past_leaves_cross_buffers_in_place():
    cache = KVCache(layers=1, kv_heads=1, head_dim=2, max_rows=100, chunk=4)
    slots = cache.allocate(2)
    for i, s in enumerate(slots):
        fill(cache, s, float(i + 1))
    cross, mask = cache.cross_kv[0], cache.source_mask
    cache.ensure(rows=2, past=9, source=1)  # only P grows: no copy of the (long) source side
    assert cache.cross_kv[0] is cross and cache.source_mask is mask
    assert cache.past_cap == 12 and cache.self_kv[0][slots[1].row, :, :4].min() == 2
    cache.ensure(rows=40, past=9, source=1)  # more rows: every buffer grows, contents kept
    assert cache.cross_kv[0] is not cross and cache.cross_kv[0][slots[1].row].min() == 2


def test_beam_reorder_copies_whole_histories_between_rows():
    cache = KVCache(layers=1, kv_heads=1, head_dim=1, max_rows=4, chunk=8)
    cache.allocate(3)
    k = cache.self_kv[0]
    k[0, 0, 0, 0], k[1, 0, 3, 0], k[2, 0, 5, 0] = 10, 20, 30  # as the decoder graph writes them
    cache.reorder([0, 1, 2], [2, 2, 0], 6)  # rows continue 2, 2, 0: sources read before any is overwritten
    assert k[0, 0, 5, 0] == 30 and k[1, 0, 5, 0] == 30 and k[2, 0, 0, 0] == 10
    assert k[1, 0, 3, 0] == 0  # row 1 took row 2's history, its own is gone


def test_allocation_beyond_capacity_is_refused():
    cache = KVCache(layers=1, kv_heads=1, head_dim=1, max_rows=2)
    cache.allocate(2)
    try:
        cache.allocate(1)
    except RuntimeError as e:
        assert "full" in str(e)
    else:
        raise AssertionError("allocation beyond max_rows succeeded")


def test_nbytes_follows_the_grown_capacity_and_is_zero_once_empty():
    """heed_kv_cache_bytes' source, and docs/performance.md's formula: per row, layers x 2 (K, V)
    x heads x d_head x 4 bytes per target position, as much again per source position plus the
    source mask's 8 bytes; a decoder-only cache has no cross K/V."""
    layers, heads, d_head = 3, 2, 4
    per_position = layers * 2 * heads * d_head * 4
    cache = KVCache(layers, heads, d_head, max_rows=100, chunk=4)
    assert cache.nbytes == 0
    slots = cache.allocate(3)  # 4 rows (one chunk), one chunk of positions on each side
    cache.ensure(rows=3, past=9, source=6)  # P 12, S 8
    assert cache.nbytes == 4 * (12 * per_position + 8 * (per_position + 8))
    cache.release(slots[:2])
    assert cache.nbytes == 4 * (12 * per_position + 8 * (per_position + 8))  # rows freed, capacity kept
    cache.release(slots[2:])
    assert cache.nbytes == 0
    decoder_only = KVCache(layers, heads, d_head, max_rows=100, chunk=4, cross=False)
    decoder_only.allocate(1)
    decoder_only.ensure(rows=1, past=5, source=0)
    assert decoder_only.nbytes == 4 * (8 * per_position + 4 * 8)  # and a one-chunk source mask, unused


def test_beam_reorder_equals_a_gather_for_any_parents():
    """Rows continuing rows that others overwrite, rows continuing untouched rows, and both in one
    step: the same as gathering every source first."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        cache = KVCache(layers=2, kv_heads=2, head_dim=3, max_rows=12, chunk=4)
        cache.allocate(12)
        cache.ensure(12, 8, 1)
        for buf in cache.self_kv:
            buf[...] = rng.standard_normal(buf.shape)
        dst = sorted(rng.choice(12, rng.integers(1, 12), replace=False).tolist())
        src = rng.integers(0, 12, len(dst)).tolist()
        expected = [b.copy() for b in cache.self_kv]
        for b in expected:
            b[dst, :, :5] = b[src, :, :5]
        cache.reorder(dst, src, 5)
        for got, want in zip(cache.self_kv, expected):
            np.testing.assert_array_equal(got, want)
