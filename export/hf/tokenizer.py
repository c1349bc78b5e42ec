"""Checkpoint tokenizers as one `tokenizer.json` for the `tokenizers` runtime.

BART, mBART and T5 have fast (Rust) tokenizers in transformers: heed saves exactly the backend
that `AutoTokenizer` builds from the folder (including the post-processor that appends `</s>` or
the source language code). Marian has none: its ids come from `vocab.json`, not from the
sentencepiece model, so heed builds a Unigram model from `source.spm`'s pieces and scores laid
out in `vocab.json`'s order, with sentencepiece's own normalizer, and `</s>` appended.
"""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, processors
from tokenizers.models import Unigram

from export.hf.base import ConversionError, read_json

LANGUAGE_TAG = re.compile(r"^>>[A-Za-z_]{2,12}<<$")
# Vocabulary entries that the source sentencepiece model never produces (target-only pieces,
# control tokens) get this score, so that the Unigram search picks them only as sentencepiece would: never.
NEVER = -1.0e6
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "vocab.json")


def fast_tokenizer(directory: Path) -> Tokenizer:
    """The `tokenizers` backend transformers itself uses for this folder."""
    from transformers import AutoTokenizer  # heavy import, only where needed

    directory = Path(directory)
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        # transformers would build an empty default tokenizer instead of failing
        raise ConversionError(f"{directory}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    try:
        hf = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as e:
        raise ConversionError(f"{directory}: cannot load the tokenizer ({e})") from e
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ConversionError(f"{directory}: tokenizer {type(hf).__name__} has no tokenizers backend to convert")
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _spm_proto(path: Path):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    if not path.is_file():
        raise ConversionError(f"{path.parent}: missing {path.name}")
    proto = model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def marian_tokenizer(directory: Path, eos: str = "</s>", unk: str = "<unk>", pad: str = "<pad>") -> Tokenizer:
    """Marian's source side: sentencepiece segmentation (source.spm), ids from vocab.json, `</s>` appended."""
    from transformers.convert_slow_tokenizer import SpmConverter

    directory = Path(directory)
    if (directory / "target_vocab.json").is_file():
        raise ConversionError(
            f"{directory}: Marian checkpoints with separate source and target vocabularies are not supported"
        )
    vocab = read_json(directory / "vocab.json")
    proto = _spm_proto(directory / "source.spm")
    if proto.trainer_spec.model_type != 1:
        raise ConversionError(f"{directory}/source.spm: only unigram sentencepiece models are supported")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ConversionError(f"{directory}/vocab.json: ids are not 0..{len(ids) - 1} without gaps")
    for token in (eos, unk, pad):
        if token not in vocab:
            raise ConversionError(f"{directory}/vocab.json: has no {token!r}")
    scores = {p.piece: p.score for p in proto.pieces if p.type in (1, 4)}  # normal and user-defined pieces
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    pieces = [(piece, scores.get(piece, NEVER)) for piece, _ in by_id]
    if not hasattr(SpmConverter, "build_tokenizer_from_spm_proto"):
        raise ConversionError("converting a Marian tokenizer needs transformers >= 5")
    # Normalizer, pre-tokenizer and decoder exactly as for the sentencepiece model; then the ids of vocab.json.
    tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, [(p.piece, p.score) for p in proto.pieces])
    tokenizer.model = Unigram(pieces, unk_id=vocab[unk], byte_fallback=False)
    # transformers strips the decoded text at both ends (a trailing space is left where an <unk> was skipped)
    # (decoders.Strip would do, but panics on an empty output)
    tokenizer.decoder = decoders.Sequence([tokenizer.decoder, decoders.Replace(Regex(" +$"), "")])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (eos, unk, pad)])
    # Language tags are whole tokens but not special: transformers' Marian tokenizer decodes them as text.
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in vocab if LANGUAGE_TAG.match(t)])
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    return tokenizer
