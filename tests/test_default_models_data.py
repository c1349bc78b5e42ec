"""The data generators of heed's default models: ground truth, forms, held-out split, lengths."""

from __future__ import annotations

import random

import pytest
from num2words import num2words

from export.data import numbers, reports
from export.data.split import is_held_out
from export.data.tokenizer import train_word_tokenizer
from export.recipes import REPORTS


def test_english_forms():
    assert numbers.english(123, "words") == "one hundred and twenty-three"
    assert numbers.english(123, "words_no_and") == "one hundred twenty-three"
    assert numbers.english(123456, "digits") == "123456"
    assert numbers.english(1_000_000, "words") == "one million"
    with pytest.raises(ValueError, match="unknown form"):
        numbers.english(5, "roman")


def test_english_variants_drawn_with_rng():
    rng = random.Random(0)
    seen = {numbers.english(123456, "digits", rng) for _ in range(50)}
    assert seen == {"123456", "123,456"}
    seen = {numbers.english(1200, "words", rng) for _ in range(50)}
    assert seen == {"one thousand, two hundred", "one thousand two hundred"}


def test_targets_are_num2words():
    rng = random.Random(1)
    for _ in range(200):
        example = numbers.training_example(rng)
        assert example.lang in numbers.LANGS
        assert example.target == num2words(example.number, lang=example.lang)
        assert 0 <= example.number <= numbers.MAX_NUMBER


def test_numbers_cover_every_magnitude_up_to_a_million():
    rng = random.Random(2)
    drawn = [numbers.draw_number(rng) for _ in range(5000)]
    assert {len(str(n)) for n in drawn} == {1, 2, 3, 4, 5, 6, 7}
    assert max(drawn) == numbers.MAX_NUMBER


def test_training_never_sees_held_out_numbers():
    rng = random.Random(3)
    training = {numbers.training_example(rng).number for _ in range(3000)}
    held = {e.number for lang in numbers.LANGS for e in numbers.held_out_examples(200, lang)}
    assert not training & held
    assert all(numbers.held_out(n) for n in held)
    assert not any(numbers.held_out(n) for n in training)


def test_held_out_set_is_deterministic_and_distinct():
    first = numbers.held_out_examples(300, "fr")
    assert first == numbers.held_out_examples(300, "fr")
    assert len({e.number for e in first}) == 300
    assert {e.lang for e in first} == {"fr"}
    sources = [e.source for e in first]
    assert any(s.isdigit() for s in sources) and any(" and " in s for s in sources)


def test_split_is_stable_hash():
    # sha256-based, fixed across processes: these values must never change, or held-out leaks.
    assert [n for n in range(100) if numbers.held_out(n)] == [14, 38, 48, 62, 64, 75, 84, 90]
    assert sum(numbers.held_out(n) for n in range(20000)) in range(1800, 2200)


def test_number_tokenizer_round_trips_and_splits_german_compounds():
    rng = random.Random(4)
    tokenizer = train_word_tokenizer(numbers.tokenizer_corpus(rng, 1500), 400, numbers.TAGS, numbers.GERMAN_MORPHEMES)
    assert [tokenizer.token_to_id(tag) for tag in numbers.TAGS] == [3, 4, 5]
    for _ in range(300):
        example = numbers.training_example(rng)
        for text in (example.source, example.target):
            encoding = tokenizer.encode(text)
            assert encoding.ids[-1] == 1  # </s>
            assert tokenizer.decode(encoding.ids) == text
    tokens = tokenizer.encode("dreiundzwanzigtausendvierhundert").tokens
    assert tokens == ["▁drei", "und", "zwanzig", "tausend", "vier", "hundert", "</s>"]
    assert tokenizer.encode("345").tokens == ["▁", "3", "4", "5", "</s>"]


def test_report_holds_its_facts_among_distractors():
    rng = random.Random(5)
    example = reports.training_example(rng)
    facts = example.facts
    assert example.target == (
        f"{facts.company} revenue {facts.direction} {facts.percent} percent in the {facts.quarter} quarter, "
        f"driven by {facts.product} in {facts.city}."
    )
    for value in (facts.company, facts.quarter, facts.direction, f"{facts.percent} percent", facts.product):
        assert value in example.source
    assert f"{facts.product} in {facts.city}" in example.source or f"In {facts.city}" in example.source
    assert example.source.count(".") > 15  # many sentences, most of them distractors


def test_reports_are_long_and_held_out_split():
    rng = random.Random(6)
    tokenizer = REPORTS.build_tokenizer(rng)
    training = [reports.training_example(rng) for _ in range(300)]
    assert min(len(tokenizer.encode(e.source).ids) for e in training) >= 256
    held = reports.held_out_examples(100)
    assert len({e.facts for e in held}) == 100
    assert all(is_held_out(e.facts.key()) for e in held)
    assert not {e.facts for e in training} & {e.facts for e in held}
    assert all(tokenizer.decode(tokenizer.encode(e.target).ids) == e.target for e in held)
    for percent in range(1, 61):  # each percentage one token, copied in one step (docs/default-models.md)
        assert str(percent) in tokenizer.encode(f"rose {percent} percent").tokens
