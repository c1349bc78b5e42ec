"""Regression: a group admitted together whose longest input exceeds the cache's source capacity,
while a shorter input of the group is written first (found by the locust run: 500 on lists of texts)."""

from __future__ import annotations

from service.engine import Engine
from service.settings import EngineConfig


def test_group_with_inputs_longer_than_the_cache_chunk_decodes_like_each_alone(tiny_dir):
    engine = Engine(tiny_dir, EngineConfig(kv_rows=8, intra_op_threads=1))
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 4)
    texts = ["hello", long]
    options = {"max_new_tokens": 6}
    sequences = engine.prepare(texts, options)
    assert len(sequences[0].input_ids) < engine.cache.chunk < len(sequences[1].input_ids)
    engine.admit(sequences)  # one encoder pass for both: padded to the long input
    while engine.running:
        engine.step()
    alone = [engine.generate([text], options)[0].token_ids for text in texts]
    assert [s.result.token_ids for s in sequences] == alone
