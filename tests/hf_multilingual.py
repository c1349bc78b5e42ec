"""Tiny multilingual Hugging Face checkpoints built locally (no hub access): M2M100, NLLB-200,
a MADLAD-style T5 with `<2xx>` tokens, and a T5 whose logits are in the thousands.

The translators are trained briefly to copy their input into German (as tests/hf_builders.py's
models are: outputs then depend on the input and end at varied lengths). Shapes are odd on purpose
(3 heads of 9 or 8, FFN widths unlike d_model, encoder and decoder depths that differ,
vocabularies that are no multiple of 8).
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm

from tests.hf_builders import _new, _save, fit, train_spm


def m2m100(directory: Path, steps: int = 120) -> Path:
    """M2M100: a BPE sentencepiece model, a fairseq-style vocab.json (ids unlike the spm ids), 100
    `__xx__` language tokens after it."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    proto = train_spm(90, "bpe")
    sp = spm.SentencePieceProcessor(model_proto=proto)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3} | {p: i + 4 for i, p in enumerate(sorted(pieces))}
    (directory / "spm.model").write_bytes(proto)
    (directory / "vocab_source.json").write_text(json.dumps(vocab))
    tokenizer = M2M100Tokenizer(
        str(directory / "vocab_source.json"), str(directory / "spm.model"), src_lang="en", tgt_lang="de"
    )
    tokenizer.save_pretrained(directory)
    (directory / "spm.model").unlink()
    (directory / "vocab_source.json").unlink()
    config = M2M100Config(
        vocab_size=max(tokenizer.lang_token_to_id.values()) + 1 + 8,  # and 8 "madeup words", as M2M100 has
        d_model=24,
        encoder_layers=3,
        decoder_layers=2,
        encoder_attention_heads=3,
        decoder_attention_heads=3,
        encoder_ffn_dim=40,
        decoder_ffn_dim=40,
        max_position_embeddings=200,
        dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        init_std=0.1,  # tiny d_model: at 0.02 the position table drowns the scaled token embeddings
        scale_embedding=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    model = _new(M2M100ForConditionalGeneration, config, seed=1)
    german = tokenizer.convert_tokens_to_ids("__de__")
    fit(model, tokenizer, steps=steps, target_prefix=[german], lr=3e-3)
    return _save(model, directory, forced_bos_token_id=german)


def nllb(directory: Path, steps: int = 150) -> Path:
    """NLLB-200: a unigram sentencepiece model converted by transformers' NllbTokenizer (fairseq
    offset, 202 `xxx_Yyyy` language tokens), d_model 27 (odd: the position table's zero column)."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sentencepiece.bpe.model").write_bytes(train_spm(100, "unigram"))
    tokenizer = NllbTokenizer.from_pretrained(
        str(directory), additional_special_tokens=FAIRSEQ_LANGUAGE_CODES, src_lang="eng_Latn"
    )
    tokenizer.save_pretrained(directory)
    config = M2M100Config(
        vocab_size=len(tokenizer) + 1,
        d_model=27,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=3,
        decoder_attention_heads=3,
        encoder_ffn_dim=50,
        decoder_ffn_dim=50,
        max_position_embeddings=300,
        dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        init_std=0.1,  # tiny d_model: at 0.02 the position table drowns the scaled token embeddings
        scale_embedding=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    model = _new(M2M100ForConditionalGeneration, config, seed=2)
    fit(model, tokenizer, steps=steps, target_prefix=[tokenizer.convert_tokens_to_ids("deu_Latn")], lr=5e-3)
    return _save(model, directory)


def madlad(directory: Path, steps: int = 120) -> Path:
    """A MADLAD-style T5 (gated GELU, untied head): `<2de>` and `<2fr>` are user-defined pieces,
    and the target language's token starts the source."""
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    tags = ["<2de>", "<2fr>"]
    proto = train_spm(100, "unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, user_defined_symbols=tags)
    (directory / "spiece.model").write_bytes(proto)
    tokenizer = T5Tokenizer.from_pretrained(str(directory), extra_ids=0)
    tokenizer.save_pretrained(directory)
    config = T5Config(
        vocab_size=len(tokenizer) + 5,
        d_model=24,
        d_kv=8,
        d_ff=56,
        num_layers=3,
        num_decoder_layers=2,  # not more decoder than encoder layers: transformers 5 sizes T5's cache by num_layers
        num_heads=3,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        dropout_rate=0.0,
    )
    model = _new(T5ForConditionalGeneration, config, seed=3)

    fit(model, tokenizer, prefix="<2de> ", steps=steps)
    return _save(model, directory)


def loud_t5(directory: Path) -> Path:
    """A T5 v1.1 (untied head) whose logits are in the thousands: `initializer_factor` 12 scales
    every initial weight, norm weights and head included (random weights, no training)."""
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spiece.model").write_bytes(train_spm(100, "unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    tokenizer = T5Tokenizer.from_pretrained(str(directory), extra_ids=2)
    tokenizer.save_pretrained(directory)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        initializer_factor=12.0,
        decoder_start_token_id=0,
        dropout_rate=0.0,
    )
    return _save(_new(T5ForConditionalGeneration, config, seed=4), directory)
