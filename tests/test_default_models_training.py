"""heed's trainer on a tiny config: batches, schedule, a few steps that learn, fp16 checkpoints."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from export.checkpoint import load, metadata, save
from export.data import numbers
from export.data.tokenizer import train_word_tokenizer
from export.recipes import NUMBERS, REPORTS, Pair
from export.train import IGNORE, TrainConfig, collate, encode_source, learning_rate, loss_of, train

TINY = dict(d_model=32, n_heads=2, d_ff=64)


@pytest.fixture(scope="module")
def tiny_numbers():
    """The numbers recipe with a tokenizer trained on a small corpus (fast to build)."""
    return dataclasses.replace(
        NUMBERS,
        build_tokenizer=lambda rng: train_word_tokenizer(
            numbers.tokenizer_corpus(rng, 400), 300, numbers.TAGS, numbers.GERMAN_MORPHEMES
        ),
        held_out=lambda count: {"de": [NUMBERS.held_out(4)["de"][0]]},
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_numbers):
    return tiny_numbers.build_tokenizer(random.Random(0))


def test_collate_shifts_targets_and_prefixes_the_tag(tokenizer):
    pairs = [Pair("twelve", "zwölf", ">>de<<"), Pair("one hundred and one", "cent un", ">>fr<<")]
    batch = collate(tokenizer, pairs)
    fr = tokenizer.token_to_id(">>fr<<")
    assert batch.input_ids[1, 0].item() == fr
    assert encode_source(tokenizer, pairs[1]) == [fr, *tokenizer.encode("one hundred and one").ids]
    assert batch.attention_mask.sum(1).tolist() == [len(encode_source(tokenizer, p)) for p in pairs]
    target = tokenizer.encode("zwölf").ids
    assert batch.labels[0, : len(target)].tolist() == target
    assert (batch.labels[0, len(target) :] == IGNORE).all()
    assert batch.decoder_input_ids[0, : len(target)].tolist() == [0, *target[:-1]]


def test_learning_rate_warms_up_decays_and_follows_a_time_budget():
    cfg = TrainConfig(steps=1000, lr=1e-3, warmup=100)
    assert learning_rate(0, cfg) == pytest.approx(1e-5)
    assert learning_rate(99, cfg) == pytest.approx(1e-3)
    assert learning_rate(550, cfg) == pytest.approx(0.55e-3)
    assert learning_rate(1000, cfg) == pytest.approx(1e-4)
    assert learning_rate(200, cfg, time_progress=1.0) == pytest.approx(1e-4)


def test_a_few_steps_lower_the_loss(tiny_numbers, tokenizer):
    rng = random.Random(1)
    batch = collate(tokenizer, [tiny_numbers.training_pair(rng) for _ in range(32)])
    torch.manual_seed(0)
    model, tok = train(
        tiny_numbers,
        TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=5),
        spec_overrides=TINY,
        progress=False,
    )
    assert tok.get_vocab() == tokenizer.get_vocab()  # the tokenizer follows the seed
    untrained = type(model)(model.spec)
    with torch.no_grad():
        assert loss_of(model, batch).item() < loss_of(untrained, batch).item() - 1.0


def test_training_is_deterministic(tiny_numbers):
    cfg = TrainConfig(steps=3, batch_size=8, warmup=1)
    first, _ = train(tiny_numbers, cfg, spec_overrides=TINY, progress=False, eval_every=0)
    second, _ = train(tiny_numbers, cfg, spec_overrides=TINY, progress=False, eval_every=0)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_round_trip_is_fp16_and_keeps_ties(tmp_path, tokenizer):
    spec = REPORTS.spec(tokenizer, **TINY)
    torch.manual_seed(0)
    from export.model import Seq2SeqModel

    model = Seq2SeqModel(spec).eval()
    save(model, tokenizer, tmp_path, "m", {"steps_done": 7})
    loaded, tok = load(tmp_path, "m")
    assert metadata(tmp_path, "m")["steps_done"] == 7
    assert loaded.spec == spec and loaded.spec.encoder.attention.kind == "local_global"
    assert loaded.lm_head.weight is loaded.shared.weight
    assert tok.get_vocab() == tokenizer.get_vocab()
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a.half().float(), b), name
