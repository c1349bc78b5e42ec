"""Train a small `tokenizers` BPE tokenizer locally (tests, demo and heed's own models).

Layout heed's own models use: `<pad>` 0 (also the decoder start), `</s>` 1 (EOS, appended to
every source), `<unk>` 2, then any extra special tokens (language tags such as `>>de<<`).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIALS = ["<pad>", "</s>", "<unk>"]


def train_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    extra_specials: Iterable[str] = (),
    splits: Iterable[pre_tokenizers.PreTokenizer] = (),
) -> Tokenizer:
    """`splits` run after the word split (Metaspace), e.g. digits or punctuation as tokens of their own."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    splits = list(splits)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), *splits]) if splits else pre_tokenizers.Metaspace()
    )
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[*SPECIALS, *extra_specials], show_progress=False
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tokenizer
