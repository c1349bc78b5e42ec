"""The KV-cache manager: preallocated per-layer buffers whose first `n` rows are the running batch.

Layout (docs/kv-cache.md): for each decoder layer, self-attention K and V `[rows, Hkv, P, D]` and,
for an encoder-decoder model, cross-attention K and V `[rows, Hkv, S, D]` plus the source mask
`[rows, S]` (a decoder-only model has neither: its prompt is in the self-attention cache). A decoding
sequence owns one row (a beam group owns `beam_size` rows) through a `Slot` whose `row` the
manager updates when it moves. Active rows are kept compact at the front, so the decoder's
inputs are the zero-copy views `buffer[:n]`; a finishing sequence's rows are refilled by moving
the last rows into them (O(rows freed), not O(batch)). The decoder graph writes the new tokens'
K/V into these views itself, at each row's own position (the runner binds its outputs to them):
rows that joined at different times sit at different positions of the same buffers. Capacity grows in chunks
(rows, P and S) when a step needs more, and resets when the batch empties.
"""

from __future__ import annotations

import numpy as np


class Slot:
    """One cache row's handle; `row` changes when the manager compacts the batch."""

    __slots__ = ("row",)

    def __init__(self, row: int):
        self.row = row


def _grown(current: int, needed: int, chunk: int) -> int:
    return current if needed <= current else -(-needed // chunk) * chunk


class KVCache:
    def __init__(
        self,
        layers: int,
        kv_heads: int,
        head_dim: int,
        max_rows: int,
        chunk: int = 32,
        dtype: type = np.float32,
        cross: bool = True,
    ):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.cross_layers = layers if cross else 0
        self.max_rows, self.chunk, self.dtype = max_rows, chunk, dtype
        self.slots: list[Slot] = []
        self._reset()

    def _reset(self) -> None:
        self.rows_cap, self.past_cap, self.source_cap = 0, 0, 0
        self.self_kv: list[np.ndarray] = []  # per layer: key, value
        self.cross_kv: list[np.ndarray] = []
        self.source_mask = np.zeros((0, 0), dtype=np.int64)

    @property
    def used(self) -> int:
        return len(self.slots)

    @property
    def free(self) -> int:
        return self.max_rows - self.used

    @property
    def nbytes(self) -> int:
        """Bytes the buffers have allocated (`heed_kv_cache_bytes`): their capacity, not the rows in
        use, since capacity is what the cache holds on to; 0 once the batch has emptied. An upper
        bound of the cache's resident share: zeroed pages no row has written may not be resident."""
        return sum(b.nbytes for b in (*self.self_kv, *self.cross_kv)) + self.source_mask.nbytes

    def _buffer(self, rows: int, length: int) -> np.ndarray:
        return np.zeros((rows, self.kv_heads, length, self.head_dim), dtype=self.dtype)

    def ensure(self, rows: int, past: int, source: int) -> None:
        """Make room for `rows` rows, `past` cached positions and `source` encoder positions."""
        new_rows = min(_grown(self.rows_cap, rows, self.chunk), self.max_rows)
        new_past = _grown(self.past_cap, past, self.chunk)
        new_source = _grown(self.source_cap, source, self.chunk)
        if (new_rows, new_past, new_source) == (self.rows_cap, self.past_cap, self.source_cap):
            return
        n, more_rows = self.used, new_rows != self.rows_cap

        def regrow(old: list[np.ndarray], layers: int, length: int, old_length: int) -> list[np.ndarray]:
            if not more_rows and length == old_length:
                return old  # only the other buffers grow: these keep their memory and contents
            fresh = [self._buffer(new_rows, length) for _ in range(2 * layers)]
            for f, o in zip(fresh, old):
                f[:n, :, :old_length] = o[:n]
            return fresh

        self.self_kv = regrow(self.self_kv, self.layers, new_past, self.past_cap)
        self.cross_kv = regrow(self.cross_kv, self.cross_layers, new_source, self.source_cap)
        if more_rows or new_source != self.source_cap:
            mask = np.zeros((new_rows, new_source), dtype=np.int64)
            mask[:n, : self.source_cap] = self.source_mask[:n]
            self.source_mask = mask
        self.rows_cap, self.past_cap, self.source_cap = new_rows, new_past, new_source

    def allocate(self, count: int) -> list[Slot]:
        if count > self.free:
            raise RuntimeError(f"KV cache full: {count} rows asked, {self.free} free")
        self.ensure(self.used + count, max(self.past_cap, 1), max(self.source_cap, 1))
        slots = [Slot(self.used + i) for i in range(count)]
        self.slots.extend(slots)
        return slots

    def release(self, slots: list[Slot]) -> None:
        """Free rows, moving the batch's last rows into the holes."""
        for slot in sorted(slots, key=lambda s: s.row, reverse=True):
            last = self.used - 1
            if slot.row != last:
                moved = self.slots[last]
                self._copy_rows([last], [slot.row])
                moved.row = slot.row
                self.slots[slot.row] = moved
            self.slots.pop()
            slot.row = -1
        if not self.slots:
            self._reset()

    def _copy_rows(self, src: list[int], dst: list[int]) -> None:
        for buf in (*self.self_kv, *self.cross_kv):
            buf[dst] = buf[src]
        self.source_mask[dst] = self.source_mask[src]

    def write_cross(self, slots: list[Slot], cross: list[np.ndarray], batch_index: int, length: int) -> None:
        """Store one encoded input's cross K/V (row `batch_index` of the encoder outputs) in `slots`."""
        self.ensure(self.used, self.past_cap, length)
        rows = [s.row for s in slots]
        for buf, out in zip(self.cross_kv, cross):
            # only this input's `length` positions: the group's padding beyond them may exceed the capacity
            buf[rows, :, :length] = out[batch_index][:, :length]
        self.source_mask[rows] = 0
        self.source_mask[rows, :length] = 1

    def write_prompt(self, slots: list[Slot], prefilled: list[np.ndarray], batch_index: int, length: int) -> None:
        """Store one prefilled prompt's K/V (row `batch_index` of the prefill's K/V, its first
        `length` positions) at positions 0.. of every row in `slots` (a beam group shares its prompt)."""
        self.ensure(self.used, length, self.source_cap)
        rows = [s.row for s in slots]
        for buf, new in zip(self.self_kv, prefilled):
            buf[rows, :, :length] = new[batch_index][:, :length]

    def reorder(self, dst: list[int], src: list[int], length: int) -> None:
        """Beam search: row dst[i] continues row src[i] (every beam group of the step at once).
        Only the self-attention cache's first `length` positions are copied; cross K/V are the
        same for every beam of an input. A source that no row overwrites (most: a beam that forks
        keeps its own row) is copied straight into place, row by row; only sources that are also
        destinations go through a temporary, taken before any write (one pass over the copied
        bytes instead of a gather's two: a third less time for a beam-4 step's reorder)."""
        overwritten = set(dst)
        direct = [(d, s) for d, s in zip(dst, src) if s not in overwritten]
        staged = [(d, s) for d, s in zip(dst, src) if s in overwritten]
        for buf in self.self_kv:
            saved = buf[[s for _, s in staged], :, :length] if staged else None
            for d, s in direct:
                buf[d, :, :length] = buf[s, :, :length]
            if staged:
                buf[[d for d, _ in staged], :, :length] = saved

    def decoder_feeds(self, names: list[str]) -> dict[str, np.ndarray]:
        """Zero-copy views of the running rows, keyed by the decoder's input names (past then cross)."""
        n = self.used
        return dict(zip(names, [b[:n] for b in (*self.self_kv, *self.cross_kv)]))
