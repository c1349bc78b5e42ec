"""Checkpoint tokenizers as one `tokenizer.json` for the `tokenizers` runtime.

BART, mBART, T5 and NLLB have fast (Rust) tokenizers in transformers: heed saves exactly the
backend that `AutoTokenizer` builds from the folder (including the post-processor that appends
`</s>` or mBART's source language code). Marian and M2M100 have none: their ids come from
`vocab.json`, not from the sentencepiece model, so heed builds the sentencepiece model's
segmentation (unigram pieces and scores, or BPE merges) over `vocab.json`'s ids, with
sentencepiece's own normalizer, and `</s>` appended. The source language tags of M2M100 and NLLB
are left out of the post-processor: heed places them per request (`LanguageTags.source_tag`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, processors
from tokenizers.models import Unigram

from export.hf.base import ConversionError, read_json

LANGUAGE_TAG = re.compile(r"^>>[A-Za-z_]{2,12}<<$")
# Vocabulary entries that the source sentencepiece model never produces (target-only pieces,
# control tokens) get this score, so that the Unigram search picks them only as sentencepiece would: never.
NEVER = -1.0e6
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "sentencepiece.bpe.model", "vocab.json")
UNIGRAM, BPE = 1, 2  # sentencepiece's TrainerSpec.model_type


def hf_tokenizer(directory: Path) -> Any:
    """The tokenizer transformers' `AutoTokenizer` builds for this folder."""
    from transformers import AutoTokenizer  # heavy import, only where needed

    directory = Path(directory)
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        # transformers would build an empty default tokenizer instead of failing
        raise ConversionError(f"{directory}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as e:
        raise ConversionError(f"{directory}: cannot load the tokenizer ({e})") from e


def fast_tokenizer(directory: Path) -> Tokenizer:
    """The `tokenizers` backend transformers itself uses for this folder."""
    hf = hf_tokenizer(directory)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ConversionError(f"{directory}: tokenizer {type(hf).__name__} has no tokenizers backend to convert")
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def eos_only(tokenizer: Tokenizer, eos: str) -> Tokenizer:
    """`tokenizer` with a post-processor that appends `eos` and nothing else."""
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, tokenizer.token_to_id(eos))]
    )
    return tokenizer


def _spm_proto(path: Path):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    if not path.is_file():
        raise ConversionError(f"{path.parent}: missing {path.name}")
    proto = model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def vocab_json_tokenizer(spm_path: Path, vocab: dict[str, int], unk: str, specials: list[str]) -> Tokenizer:
    """`spm_path`'s segmentation and normalizer, with the ids of `vocab` (a `vocab.json`), and
    `specials` as special tokens."""
    from transformers.convert_slow_tokenizer import SpmConverter

    if not hasattr(SpmConverter, "build_tokenizer_from_spm_proto"):
        raise ConversionError("converting a sentencepiece tokenizer with vocab.json needs transformers >= 5")
    proto = _spm_proto(spm_path)
    kind = proto.trainer_spec.model_type
    if kind not in (UNIGRAM, BPE):
        raise ConversionError(f"{spm_path}: only unigram and BPE sentencepiece models are supported")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ConversionError(f"{spm_path.parent}/vocab.json: ids are not 0..{len(ids) - 1} without gaps")
    for token in specials:
        if token not in vocab:
            raise ConversionError(f"{spm_path.parent}/vocab.json: has no {token!r}")
    if kind == UNIGRAM:
        # Normalizer, pre-tokenizer and decoder exactly as for the sentencepiece model; then vocab.json's ids.
        tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, [(p.piece, p.score) for p in proto.pieces])
        scores = {p.piece: p.score for p in proto.pieces if p.type in (1, 4)}  # normal and user-defined pieces
        pieces = [(piece, scores.get(piece, NEVER)) for piece, _ in sorted(vocab.items(), key=lambda item: item[1])]
        tokenizer.model = Unigram(pieces, unk_id=vocab[unk], byte_fallback=False)
    else:
        # The merges sentencepiece ranks by score, over vocab.json's ids; a BPE vocabulary holds every
        # piece a merge makes, so none may be missing (transformers would make such a piece <unk>).
        missing = [p.piece for p in proto.pieces if p.type == 1 and p.piece not in vocab]
        if missing:
            raise ConversionError(
                f"{spm_path.parent}/vocab.json: lacks {len(missing)} pieces of {spm_path.name} ({missing[:3]}); "
                "heed supports BPE sentencepiece models only when vocab.json holds every piece"
            )
        native = SpmConverter.build_tokenizer_from_spm_proto(proto, {p.piece: i for i, p in enumerate(proto.pieces)})
        state = json.loads(native.to_str())
        state["model"]["vocab"] = {p.piece: vocab.get(p.piece, vocab[unk]) for p in proto.pieces} | vocab
        state["model"]["unk_token"] = unk
        tokenizer = Tokenizer.from_str(json.dumps(state))
    # transformers strips the decoded text at both ends (a trailing space is left where an <unk> was skipped)
    # (decoders.Strip would do, but panics on an empty output)
    tokenizer.decoder = decoders.Sequence([tokenizer.decoder, decoders.Replace(Regex(" +$"), "")])
    return with_tokens(tokenizer, {t: vocab[t] for t in specials}, special=True)


def with_tokens(tokenizer: Tokenizer, tokens: dict[str, int], special: bool) -> Tokenizer:
    """`tokenizer` with `tokens` as whole tokens at the given ids (`add_tokens` would number new
    tokens after the model's vocabulary, which is not always where a checkpoint has them)."""
    state = json.loads(tokenizer.to_str())
    state["added_tokens"] += [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False}
        | {"normalized": False, "special": special}
        for t, i in tokens.items()
    ]
    return Tokenizer.from_str(json.dumps(state))


def marian_tokenizer(directory: Path, eos: str = "</s>", unk: str = "<unk>", pad: str = "<pad>") -> Tokenizer:
    """Marian's source side: sentencepiece segmentation (source.spm), ids from vocab.json, `</s>` appended."""
    directory = Path(directory)
    if (directory / "target_vocab.json").is_file():
        raise ConversionError(
            f"{directory}: Marian checkpoints with separate source and target vocabularies are not supported"
        )
    vocab = read_json(directory / "vocab.json")
    tokenizer = vocab_json_tokenizer(directory / "source.spm", vocab, unk, [eos, unk, pad])
    # Language tags are whole tokens but not special: transformers' Marian tokenizer decodes them as text.
    tags = {t: i for t, i in vocab.items() if LANGUAGE_TAG.match(t)}
    return eos_only(with_tokens(tokenizer, tags, special=False), eos)


def m2m100_tokenizer(directory: Path, hf: Any) -> Tokenizer:
    """M2M100's (transformers' slow `M2M100Tokenizer` `hf`): sentencepiece.bpe.model's segmentation,
    vocab.json's ids, its special tokens and language tokens (`__de__`, ids after vocab.json's),
    `</s>` appended."""
    directory = Path(directory)
    vocab = read_json(directory / "vocab.json")
    specials = [str(t) for t in (hf.bos_token, hf.eos_token, hf.unk_token, hf.pad_token)]
    tokenizer = vocab_json_tokenizer(directory / "sentencepiece.bpe.model", vocab, str(hf.unk_token), specials)
    taken = sorted(set(hf.lang_token_to_id.values()) & set(vocab.values()))
    if taken:
        raise ConversionError(f"{directory}: language token ids {taken[:3]} are also ids of vocab.json")
    return eos_only(with_tokens(tokenizer, dict(hf.lang_token_to_id), special=True), str(hf.eos_token))
