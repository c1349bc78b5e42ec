"""A deterministic train / held-out split by hash: stable across runs, machines and Python versions
(unlike `hash()`), so that a held-out example is never generated for training."""

from __future__ import annotations

import hashlib

HELD_OUT_BUCKETS = 10  # one bucket of ten is held out


def is_held_out(key: str) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") % HELD_OUT_BUCKETS == 0
