"""Where MADLAD's `<2xx>` tag goes: behind whatever the checkpoint's tokenizer writes before it.
transformers up to 5.24 made the tags added tokens (`<2de> ▁Hello`); 5.25 tokenizes them as
sentencepiece does (`▁ <2de> ▁Hello`). heed reads which from the tokenizer at export."""

import pytest
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import Unigram

from export.hf.base import ConversionError
from export.hf.t5 import T5Converter
from export.hf.tokenizer import with_tokens

PIECES = ["<pad>", "</s>", "<unk>", "<2de>", "<2fr>", "▁", "▁Hello", "▁world", ".", "H", "e", "l", "o", "w", "r", "d"]


def spm_like(**added: int) -> Tokenizer:
    """A sentencepiece-shaped tokenizer (metaspace before each word) over PIECES, with `added` as added tokens."""
    tokenizer = Tokenizer(Unigram([(p, -1.0 if len(p) > 1 else -5.0) for p in PIECES], unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(prepend_scheme="always")]
    )
    return with_tokens(tokenizer, added, special=False) if added else tokenizer


def test_tags_as_pieces_are_led_by_the_metaspace():
    tags = T5Converter().languages(None, spm_like())
    assert (tags.tokens, tags.lead_ids) == ({"de": 3, "fr": 4}, [PIECES.index("▁")])


def test_tags_as_added_tokens_lead_with_nothing():
    assert T5Converter().languages(None, spm_like(**{"<2de>": 3, "<2fr>": 4})).lead_ids == []


def test_a_tokenizer_that_leads_tags_differently_is_refused():
    with pytest.raises(ConversionError, match="different ids before different <2xx> tags"):
        T5Converter().languages(None, spm_like(**{"<2de>": 3}))
