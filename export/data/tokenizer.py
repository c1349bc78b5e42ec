"""The tokenizer of heed's default models: BPE over words, with digits and punctuation split
off as tokens of their own.

Single digits keep numbers compositional where a model must read them (heed-numbers reads "345"
digit by digit instead of learning one token per number). Where a model only copies numbers
(heed-reports copies the percentage into its summary), `whole_numbers` keeps each digit run
together so that BPE learns the frequent ones as one token: copying one token is one attention
look-up, while copying digit by digit is where a small model swaps or repeats digits. Separate
punctuation keeps "Oslo." and "Oslo" the same word. Ids follow heed's layout (see
export/tokenizer_train.py): `<pad>` 0, `</s>` 1, `<unk>` 2, then the extra special tokens; the
post-processor appends `</s>`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, pre_tokenizers

from export.tokenizer_train import train_tokenizer


def train_word_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    extra_specials: Iterable[str] = (),
    morphemes: str | None = None,
    whole_numbers: bool = False,
) -> Tokenizer:
    """`morphemes` (a regex) splits matches out of compound words before BPE, so that e.g. German
    "dreiundzwanzigtausend" is always "drei" "und" "zwanzig" "tausend", whatever BPE would merge."""
    splits = [pre_tokenizers.Digits(individual_digits=not whole_numbers), pre_tokenizers.Punctuation()]
    if morphemes:
        splits.append(pre_tokenizers.Split(Regex(morphemes), behavior="isolated"))
    return train_tokenizer(corpus, vocab_size, extra_specials, splits)
