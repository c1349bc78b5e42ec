"""The reference workload of the benchmarks (shared/DESIGN.md: performance method).

A Marian opus-mt-en-de-sized checkpoint (d_model 512, 6+6 layers, 8 heads, FFN 2048, vocab 58101,
about 74M parameters) with random weights, built locally from `transformers.MarianConfig` and
saved as a Hugging Face folder, so that heed, transformers and CTranslate2 all load the same
weights. Speed does not depend on the weight values. Sources are 24 tokens (23 pieces + EOS).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

SOURCE_TOKENS = 24
VOCAB_SIZE = 58101
_WORDS = (
    "the a quick brown fox jumps over lazy dog hello world how are you today numbers written with digits long"
    " report about weather in mountains sea river city house tree green red blue small large old new first last"
    " day night morning evening music book table window door"
).split()


def _corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 30))) for _ in range(n)]


def build_checkpoint(directory: Path, seed: int = 0) -> Path:
    """Write the reference HF folder once (weights, config, Marian tokenizer files); reuse it after."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel

    if (directory / "config.json").is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(500, seed)),
        model_writer=proto,
        vocab_size=200,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (directory / "source.spm").write_bytes(proto.getvalue())
    (directory / "target.spm").write_bytes(proto.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_control(i) and not sp.is_unknown(i)]
    vocab = {"</s>": 0, "<unk>": 1} | {p: i + 2 for i, p in enumerate(pieces)}
    for i in range(len(vocab), VOCAB_SIZE - 1):  # the rest of a real vocabulary: target-side pieces
        vocab[f"▁w{i}"] = i
    vocab["<pad>"] = VOCAB_SIZE - 1
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=VOCAB_SIZE,
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        max_position_embeddings=512,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    model.generation_config.bad_words_ids = [[pad]]
    model.save_pretrained(directory)
    return directory


def source_texts(checkpoint: Path, count: int, seed: int = 1) -> list[str]:
    """Texts that the checkpoint's tokenizer turns into exactly SOURCE_TOKENS ids (EOS included)."""
    from transformers import MarianTokenizer

    tokenizer = MarianTokenizer.from_pretrained(checkpoint)
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < count:
        words = [rng.choice(_WORDS) for _ in range(40)]
        pieces = tokenizer.tokenize(" ".join(words))[: SOURCE_TOKENS - 1]
        text = tokenizer.convert_tokens_to_string(pieces)
        if len(tokenizer(text).input_ids) == SOURCE_TOKENS:
            texts.append(text)
    return texts
