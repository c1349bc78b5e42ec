"""Alignment: each output token's cross-attention over the input tokens, as the PyTorch model has it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.demo import build_model_dir
from service.engine import Engine

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "one two three"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    model, directory = build_model_dir(tmp_path_factory.mktemp("align"), "align")
    return model, Engine(directory)


@pytest.mark.parametrize("options", [{"max_new_tokens": 8}, {"max_new_tokens": 8, "beam_size": 3}])
def test_alignment_matches_pytorch_cross_attention(built, options):
    model, engine = built
    results = engine.generate(TEXTS, options, return_alignment=True)
    for text, result in zip(TEXTS, results):
        ids = engine.prepare([text])[0].input_ids
        src = torch.tensor([ids])
        dec = torch.tensor([[0, *result.token_ids[:-1]]])
        with torch.no_grad():
            cross = model.encode(src, torch.ones_like(src))
            positions = torch.arange(dec.shape[1])[None]
            _, _, weights = model.decode(dec, positions, None, cross, torch.ones_like(src))
        want = weights[0, -1].numpy()
        got = np.array(result.alignment.weights)
        assert got.shape == (result.output_tokens, len(ids))
        np.testing.assert_allclose(got, want, atol=2e-4)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-3)


def test_alignment_only_when_asked(built):
    _, engine = built
    assert engine.generate(TEXTS[:1], {"max_new_tokens": 4})[0].alignment is None
