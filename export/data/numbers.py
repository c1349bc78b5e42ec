"""Numbers written in English (words with or without "and", or digits) -> German, French or
Spanish words, with `num2words` as ground truth.

The source is the English text alone; the target language is a tag token (`>>de<<`) that the
runtime puts in front of the source ids (`languages.placement = "source_prefix"`).
Numbers are drawn from 0 to 10**6 with every order of magnitude well represented; a number is
held out (never used for training) when its hash falls in the held-out bucket.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from num2words import num2words

from export.data.split import is_held_out

LANGS = ("de", "fr", "es")
MAX_NUMBER = 10**6
FORMS = ("words", "words_no_and", "digits")
# Probability of each number of digits (1-6); 10**6 itself is drawn separately.
DIGIT_WEIGHTS = (0.04, 0.08, 0.14, 0.2, 0.24, 0.28)
P_MILLION = 0.005
TAGS = tuple(f">>{lang}<<" for lang in LANGS)
# German writes a number as one compound word: its tokenizer splits out these parts ("und", not
# after "h", leaves English "hundred" whole), so that every number is made of the same few tokens.
GERMAN_MORPHEMES = "hundert|tausend|(?<!h)und"


@dataclass(frozen=True)
class Example:
    number: int
    lang: str
    source: str
    target: str


def english(number: int, form: str, rng: random.Random | None = None) -> str:
    """The English source text of `number` in one of `FORMS`.

    With an `rng`, the variants a person might also type are drawn: no comma between thousands
    and hundreds in words, thousands separators in digits.
    """
    if form == "digits":
        return f"{number:,}" if rng is not None and number >= 1000 and rng.random() < 0.3 else str(number)
    text = num2words(number, lang="en")
    if form == "words_no_and":
        text = text.replace(" and ", " ")
    elif form != "words":
        raise ValueError(f"unknown form {form!r}; one of {FORMS}")
    if rng is not None and rng.random() < 0.3:
        text = text.replace(",", "")
    return text


def target(number: int, lang: str) -> str:
    return num2words(number, lang=lang)


def held_out(number: int) -> bool:
    return is_held_out(f"number:{number}")


def draw_number(rng: random.Random) -> int:
    if rng.random() < P_MILLION:
        return MAX_NUMBER
    digits = rng.choices(range(1, 7), weights=DIGIT_WEIGHTS)[0]
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def draw_split_number(rng: random.Random, held: bool) -> int:
    while True:
        number = draw_number(rng)
        if held_out(number) == held:
            return number


def training_example(rng: random.Random) -> Example:
    number = draw_split_number(rng, held=False)
    lang = rng.choice(LANGS)
    return Example(number, lang, english(number, rng.choice(FORMS), rng), target(number, lang))


def held_out_examples(count: int, lang: str, seed: int = 1234) -> list[Example]:
    """`count` distinct held-out numbers for `lang`, each in one of the three forms (as given by
    `num2words`, no variants): the evaluation set."""
    rng = random.Random(f"{seed}:{lang}")
    numbers: dict[int, None] = {}
    while len(numbers) < count:
        numbers[draw_split_number(rng, held=True)] = None
    return [Example(n, lang, english(n, rng.choice(FORMS)), target(n, lang)) for n in numbers]


def tokenizer_corpus(rng: random.Random, size: int = 20000) -> list[str]:
    """Texts covering every English form and target language, to train the tokenizer on."""
    texts = []
    for _ in range(size):
        number = draw_number(rng)
        texts.append(english(number, rng.choice(FORMS), rng))
        texts.extend(target(number, lang) for lang in LANGS)
    return texts
