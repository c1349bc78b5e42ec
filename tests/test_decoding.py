"""Decoding through the runtime (ONNX graphs + KV cache + searches) against references."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from export.demo import build_model_dir, spec
from service.engine import Engine
from service.options import GenerationOptions
from service.search import INEXACT, BeamSearch, Greedy, Scores, banned_ngram_tokens, log_softmax, process_scores
from service.settings import EngineConfig
from service.validation import ModelLimits, resolve

TEXTS = [
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "one two",
    "a long report about the weather in the mountains and the sea, with numbers like 12 and 345",
    "six",
    "how are you today?",
]

SPECS = {
    "default": spec(),
    "local-global-relative-gqa": spec(
        positions="relative",
        n_kv_heads=2,
        encoder={
            "layers": 2,
            "attention": {
                "kind": "local_global",
                "window": 2,
                "global_tokens": 1,
                "relative_bias": {"num_buckets": 8, "max_distance": 16},
            },
        },
        decoder={
            "layers": 2,
            "attention": {"kind": "local", "window": 4, "relative_bias": {"num_buckets": 8, "max_distance": 16}},
        },
    ),
}


@pytest.fixture(scope="module", params=sorted(SPECS))
def built(request, tmp_path_factory):
    model, directory = build_model_dir(tmp_path_factory.mktemp("dec"), request.param, SPECS[request.param])
    return model, Engine(directory, EngineConfig(kv_rows=16))


def torch_greedy(model, engine: Engine, text: str, max_new: int) -> list[int]:
    """Greedy decoding by full recomputation: the whole target prefix through PyTorch, every step."""
    ids = engine.prepare([text], target_lang="de")[0].input_ids
    src = torch.tensor([ids])
    mask = torch.ones_like(src)
    out = [engine.manifest.special_tokens.decoder_start_id]
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(src, mask, torch.tensor([out]))[0, -1]
            logits[0] = -float("inf")  # the demo model bans <pad> (bad_words_ids)
            token = int(logits.argmax())
            out.append(token)
            if token == engine.manifest.special_tokens.eos_id:
                return out[1:-1]
    return out[1:]


def test_cached_decoding_equals_full_recomputation(built):
    model, engine = built
    for text in TEXTS:
        got = engine.generate([text], {"max_new_tokens": 12})[0].token_ids
        assert got == torch_greedy(model, engine, text, 12), text


@pytest.mark.parametrize(
    "options", [{"max_new_tokens": 12}, {"max_new_tokens": 12, "beam_size": 3}], ids=["greedy", "beam3"]
)
def test_batched_equals_alone(built, options):
    _, engine = built
    together = engine.generate(TEXTS, options)
    for text, result in zip(TEXTS, together):
        assert result.token_ids == engine.generate([text], options)[0].token_ids, text
    assert engine.cache.used == 0


def test_sequences_joining_a_running_batch_decode_as_alone(built):
    """Continuous batching: each sequence is admitted a few steps after the previous one."""
    _, engine = built
    options = {"max_new_tokens": 10, "min_new_tokens": 10}
    greedy = engine.prepare(TEXTS[:3], options)
    beams = engine.prepare(TEXTS[3:], options | {"beam_size": 2})
    pending = [s for pair in zip(greedy, beams) for s in pair]
    while pending or engine.running:
        if pending:
            engine.admit([pending.pop(0)])
        engine.step()
    for seq, text, beam in zip([*greedy, *beams], TEXTS, [1] * 3 + [2] * 3):
        alone = engine.generate([text], options | ({"beam_size": 2} if beam > 1 else {}))[0]
        assert seq.result.token_ids == alone.token_ids, text


def test_sampling_is_reproducible_by_seed(built):
    _, engine = built
    opts = {"max_new_tokens": 16, "min_new_tokens": 16, "temperature": 1.5, "top_p": 0.95}
    first = [r.token_ids for r in engine.generate(TEXTS, opts | {"seed": 7})]
    assert first == [r.token_ids for r in engine.generate(TEXTS, opts | {"seed": 7})]
    assert first != [r.token_ids for r in engine.generate(TEXTS, opts | {"seed": 8})]
    alone = engine.generate(TEXTS[:1], opts | {"seed": 7})[0].token_ids
    assert alone == first[0]


def test_sampling_with_top_k_1_is_greedy(built):
    _, engine = built
    greedy = [r.token_ids for r in engine.generate(TEXTS, {"max_new_tokens": 10})]
    assert greedy == [r.token_ids for r in engine.generate(TEXTS, {"max_new_tokens": 10, "top_k": 1, "seed": 1})]


def test_length_limits_and_no_repeat_ngram(built):
    _, engine = built
    results = engine.generate(TEXTS, {"max_new_tokens": 20, "min_new_tokens": 20, "no_repeat_ngram_size": 2})
    for r in results:
        assert r.output_tokens == 20 and r.finish_reason == "length"
        seq = [0, *r.token_ids]
        bigrams = list(itertools.pairwise(seq))
        assert len(bigrams) == len(set(bigrams))


def test_stop_string_ends_generation_before_it(built):
    _, engine = built
    full = engine.generate(TEXTS[:1], {"max_new_tokens": 12, "min_new_tokens": 12})[0]
    stop = full.text.split()[1] if len(full.text.split()) > 1 else full.text[1:3]
    result = engine.generate(TEXTS[:1], {"max_new_tokens": 12, "min_new_tokens": 12, "stop": [stop]})[0]
    assert result.finish_reason == "stop"
    assert stop not in result.text and full.text.startswith(result.text)


def config(**options):
    from service.manifest import GenerationDefaults

    limits = ModelLimits(max_input_tokens=64, max_output_tokens=64, max_beam_size=8, kv_rows=16)
    return resolve(GenerationOptions(**options), GenerationDefaults(), limits)


def test_repetition_penalty_divides_positive_and_multiplies_negative_scores():
    scores = Scores(np.array([[2.0, -2.0, 2.0, -2.0]], dtype=np.float32))
    process_scores(scores, [[0, 1]], config(repetition_penalty=2.0), eos_ids=(9,), generated=1)
    assert scores.values.tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_min_new_tokens_and_forced_tokens():
    cfg = config(min_new_tokens=2, max_new_tokens=5)
    scores = np.zeros((1, 4), dtype=np.float32)
    process_scores(Scores(scores), [[0]], cfg, eos_ids=(1,), generated=1)
    assert scores[0, 1] == -np.inf and np.isfinite(scores[0, [0, 2, 3]]).all()
    forced = replace(cfg, forced_bos_id=3, forced_eos_id=2, min_new_tokens=0)
    first = process_scores(Scores(np.zeros((1, 4), np.float32)), [[0]], forced, eos_ids=(1,), generated=0)
    assert first.argmax() == 3 and np.isinf(first[0, [0, 1, 2]]).all()
    last = process_scores(Scores(np.zeros((1, 4), np.float32)), [[0, 3, 3, 3, 3]], forced, eos_ids=(1,), generated=4)
    assert last.argmax() == 2 and np.isinf(last[0, [0, 1, 3]]).all()


def k_best(logits: np.ndarray, k: int, log_probs: bool) -> Scores:
    """What the decoder graph's top_k outputs give a search: the k best tokens, best first."""
    ids = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    values = log_softmax(logits) if log_probs else logits
    return Scores(np.take_along_axis(values, ids, -1), ids)


def processing(**options):
    """A config with every processor that bans or lowers scores."""
    cfg = config(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3, **options)
    return replace(cfg, bad_words_ids=((5,), (7, 8)), forced_bos_id=4, forced_eos_id=1)


def test_processors_on_the_k_best_give_the_scores_they_give_over_the_vocabulary():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 40)).astype(np.float32)
    histories = [[0, 7, 5, 9, 7], [0, 9, 9], [0, 12, 13, 12]]
    full = Scores(logits.copy())
    top = k_best(logits, 12, log_probs=False)
    top.ids[0, -1] = 8  # make sure banned tokens are among the columns
    top.values[0, -1] = logits[0, 8]
    for scores in (full, top):
        process_scores(scores, histories, processing(), eos_ids=(1,), generated=2)
    assert np.array_equal(top.values, np.take_along_axis(full.values, top.ids, -1))


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_searches_on_the_k_best_decide_as_over_the_vocabulary(search):
    """Two searches in lockstep on the same random logits, one over the vocabulary and one over the
    k best (falling back to the vocabulary when inexact, as the engine does): same tokens, same parents."""
    vocab, beams, rng = 50, 3, np.random.default_rng(1)
    cfg = processing(max_new_tokens=30, beam_size=beams if search == "beam" else 1)
    make = (lambda: BeamSearch(cfg, [0], (1,))) if search == "beam" else (lambda: Greedy(cfg, [0], (1,)))
    whole, k_best_search = make(), make()
    steps, inexact = 0, []
    while not whole.done:
        logits = rng.normal(scale=3.0, size=(whole.rows, vocab)).astype(np.float32)
        logits[:, 2] = logits[:, 3]  # a tie
        expected = whole.step(Scores(logits.copy()))
        got = k_best_search.step(k_best(logits, k_best_search.candidates, k_best_search.log_probs))
        if got is INEXACT:
            inexact.append(steps)
            got = k_best_search.step(Scores(logits.copy()))
        assert k_best_search.sequences == whole.sequences
        assert (expected is None and got is None) or np.array_equal(expected, got)
        steps += 1
    assert k_best_search.output() == whole.output() and steps > 3 and len(inexact) < steps / 2
    assert 0 not in inexact and 29 not in inexact  # forced first and last tokens are decided on the k best


def test_a_step_without_a_safe_choice_among_the_k_best_is_inexact_and_changes_nothing():
    search = Greedy(replace(config(), bad_words_ids=((4,), (5,))), [0], (1,))
    logits = np.array([[0.0, 0.1, 0.2, 0.3, 2.0, 1.0]], dtype=np.float32)
    assert search.step(k_best(logits, 2, log_probs=False)) is INEXACT  # both banned
    assert search.sequences == [[0]] and search.generated == 0
    assert search.step(k_best(logits, 3, log_probs=False)) is INEXACT  # token 3 only ties the bound
    assert search.step(k_best(logits, 4, log_probs=False)) is None and search.sequences == [[0, 3]]
    everything_banned = np.full((1, 6), -np.inf, dtype=np.float32)
    assert search.step(Scores(everything_banned)) is None  # over the vocabulary a step is always decided


def test_banned_ngram_tokens():
    assert banned_ngram_tokens([5, 6, 7, 5, 6], 3) == [7]
    assert banned_ngram_tokens([5, 6, 7, 5], 2) == [6]
    assert banned_ngram_tokens([5], 3) == []
