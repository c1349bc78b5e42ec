"""heed's two default models: what each is trained on and how it is packaged.

A recipe ties a data generator to a tokenizer, an architecture (`ModelSpec`) and the manifest
fields of the served model, so that training (export/train.py), packaging (export/defaults.py)
and evaluation (export/evaluate.py) agree on every one of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tokenizers import Tokenizer

from export.data import numbers, reports
from export.data.tokenizer import train_word_tokenizer
from service.manifest import GenerationDefaults, LanguageTags, Limits, ModelSpec, SpecialTokens, StackSpec, Task

SPECIAL_TOKENS = SpecialTokens(pad_id=0, eos_id=1, decoder_start_id=0, unk_id=2)


@dataclass(frozen=True)
class Pair:
    """One training or evaluation example: `tag` is the language tag put before the source."""

    source: str
    target: str
    tag: str | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    task: Task
    build_tokenizer: Callable[[random.Random], Tokenizer]
    architecture: dict  # ModelSpec fields except vocab_size
    training_pair: Callable[[random.Random], Pair]
    held_out: Callable[[int], dict[str, list[Pair]]]  # count -> evaluation sets by target language ("" = none)
    limits: Limits
    generation: GenerationDefaults = field(default_factory=lambda: GenerationDefaults(bad_words_ids=[[0]]))
    langs: tuple[str, ...] = ()
    source_languages: tuple[str, ...] = ()  # what the model reads, for clients that pick a model by language pair

    def spec(self, tokenizer: Tokenizer, **overrides) -> ModelSpec:
        return ModelSpec.model_validate({"vocab_size": tokenizer.get_vocab_size(), **self.architecture, **overrides})

    def languages(self, tokenizer: Tokenizer) -> LanguageTags | None:
        if not self.langs:
            return None
        tokens = {lang: tokenizer.token_to_id(f">>{lang}<<") for lang in self.langs}
        return LanguageTags(placement="source_prefix", tokens=tokens, default=self.langs[0])


def _number_pair(example: numbers.Example) -> Pair:
    return Pair(example.source, example.target, f">>{example.lang}<<")


NUMBERS = Recipe(
    name="heed-numbers",
    task="translate",
    build_tokenizer=lambda rng: train_word_tokenizer(
        numbers.tokenizer_corpus(rng), 400, numbers.TAGS, numbers.GERMAN_MORPHEMES
    ),
    architecture=dict(
        d_model=128,
        n_heads=4,
        d_ff=256,
        encoder=StackSpec(layers=2),
        decoder=StackSpec(layers=2, attention={"kind": "causal"}),
        activation="gelu",
        pre_norm=True,
        final_norm=True,
        scale_embedding=True,
        max_positions=64,
    ),
    training_pair=lambda rng: _number_pair(numbers.training_example(rng)),
    held_out=lambda count: {
        lang: [_number_pair(e) for e in numbers.held_out_examples(count, lang)] for lang in numbers.LANGS
    },
    limits=Limits(max_input_tokens=64, max_output_tokens=48),
    generation=GenerationDefaults(max_new_tokens=48, bad_words_ids=[[0]]),
    langs=numbers.LANGS,
    source_languages=("en",),
)

REPORTS = Recipe(
    name="heed-reports",
    task="summarize",
    build_tokenizer=lambda rng: train_word_tokenizer(reports.tokenizer_corpus(rng), 1000, whole_numbers=True),
    architecture=dict(
        d_model=128,
        n_heads=4,
        d_ff=256,
        encoder=StackSpec(layers=2, attention={"kind": "local_global", "window": 16, "global_tokens": 8}),
        decoder=StackSpec(layers=2, attention={"kind": "causal"}),
        activation="gelu",
        pre_norm=True,
        final_norm=True,
        scale_embedding=True,
        max_positions=512,
    ),
    training_pair=lambda rng: _report_pair(reports.training_example(rng)),
    held_out=lambda count: {"": [_report_pair(e) for e in reports.held_out_examples(count)]},
    limits=Limits(max_input_tokens=512, max_output_tokens=48),
    generation=GenerationDefaults(max_new_tokens=48, bad_words_ids=[[0]]),
)


def _report_pair(example: reports.Example) -> Pair:
    return Pair(example.source, example.target)


RECIPES = {recipe.name: recipe for recipe in (NUMBERS, REPORTS)}
