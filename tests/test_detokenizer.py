"""Incremental detokenization: the streamed deltas add up to the decoded text, whatever the
tokenizer does across token boundaries, for a constant number of decodes per token."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from export.demo import tokenizer as sentencepiece_tokenizer
from service.detokenizer import Detokenizer
from service.engine import Engine, build_sequences
from service.options import GenerationOptions
from service.validation import RawRequest, validate


def byte_level() -> Tokenizer:
    """GPT-2 style: characters outside the tiny training corpus are split into single bytes."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 10, trainer)
    return tok


def word_piece() -> Tokenizer:
    vocab = {"[UNK]": 0, "hel": 1, "##lo": 2, "wor": 3, "##ld": 4, ",": 5, "!": 6}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    return tok


TOKENIZERS = {
    "byte-level, multi-byte characters split over tokens": (byte_level, "the fox: héllo 日本語 ünïcödé 🦊 dog"),
    "word-piece joins and cleanup": (word_piece, "hello world, hello! world"),
    "sentencepiece leading spaces": (sentencepiece_tokenizer, "one two three four five six seven"),
}


class CountingDecode:
    """A tokenizer's decode that counts its calls and the tokens they decode."""

    def __init__(self, tok: Tokenizer):
        self.tok, self.calls, self.tokens = tok, 0, 0

    def __call__(self, ids: list[int]) -> str:
        self.calls += 1
        self.tokens += len(ids)
        return self.tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("case", TOKENIZERS)
def test_deltas_add_up_to_the_decoded_text(case):
    build, text = TOKENIZERS[case]
    tok = build()
    ids = tok.encode(text).ids
    decode = CountingDecode(tok)
    detokenizer, deltas = Detokenizer(decode), []
    for i, token in enumerate(ids):
        deltas.append(detokenizer.push(token))
        assert tok.decode(ids[: i + 1]).startswith(detokenizer.text)  # never ahead of the full decode
    assert "".join(deltas) == detokenizer.text == tok.decode(ids)
    assert not any("\ufffd" in d for d in deltas)
    assert decode.calls == 2 * len(ids)
    if case.startswith("byte-level"):
        assert len(ids) > len(text.split()) + 10 and "" in deltas  # some tokens are parts of characters


def test_streaming_and_stop_strings_decode_a_constant_number_of_times_per_token(http_repo):
    """The long-positions test model, 240 tokens streamed with a stop string that never matches:
    every decode of the tokenizer is counted, the final text's included."""
    engine = Engine(http_repo / "tiny")
    decode = CountingDecode(engine.codec.tokenizer)
    engine.codec.decode = decode
    options = GenerationOptions(max_new_tokens=240, min_new_tokens=240, stop=["\x00never"])
    valid = validate(RawRequest(["a long one"], options, stream=True), engine.manifest, engine.codec, engine.limits)
    streamed: list[tuple[int, str]] = []
    [sequence] = build_sequences(valid, engine.manifest, engine.codec, lambda t, text: streamed.append((t, text)))
    engine.admit([sequence])
    while engine.running:
        engine.step()
    result = sequence.result
    assert result.output_tokens == len(streamed) == 240 and result.finish_reason == "length"
    assert [t for t, _ in streamed] == result.token_ids
    assert "".join(text for _, text in streamed) == result.text
    # two window decodes per token, a few tokens each; one full decode at the end. Decoding the
    # whole output at each token, for the stream and for the stop check, would be ~58000 tokens.
    assert decode.calls <= 2 * 240 + 1
    assert decode.tokens - 240 <= 8 * 240, decode.tokens
