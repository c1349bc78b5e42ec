"""Tiny Hugging Face checkpoints built locally for the importer tests (no hub access).

Each builder writes a folder that looks like a real checkpoint of its architecture: config and
generation config, weights from `save_pretrained`, and tokenizer files trained here
(sentencepiece for Marian, mBART and T5; byte-level BPE for BART).

Random init gives outputs that ignore the input (every row decodes the same tokens) and logits so
flat that fp32 noise could flip a choice; so each model is trained briefly to copy its input: outputs
then depend on it, end with EOS at varied lengths, and have well-separated logits. The
token-identity tests then test the importer, not luck. (Such short training does not always
escape a degenerate output; the init seeds of BART and mBART are ones that do.)
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import sentencepiece as spm
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

_VOCABULARY = (
    "the a quick brown fox jumps over lazy dog hello world how are you today numbers like 12 and 345"
    " written with digits long report about weather in mountains sea river city house tree green red"
    " blue small large old new first last day night morning evening music book table window door"
)
WORDS = _VOCABULARY.split()
LANGS = ["de", "fr"]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(n)]


def inputs(n: int = 24, seed: int = 1) -> list[str]:
    """Varied lengths (1 to ~40 words), with punctuation and case the tokenizers must handle."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(1 + (i * 7) % 40)]
        text = " ".join(words)
        texts.append(text.capitalize() + ("." if i % 3 else "!"))
    return texts


def train_spm(vocab_size: int, model_type: str = "unigram", **options) -> bytes:
    """A sentencepiece model (`unigram` or `bpe`) trained on the corpus, as serialized bytes."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    return model.getvalue()


def fit(
    model, tokenizer, prefix: str = "", steps: int = 120, seed: int = 0, target_prefix: list[int] = (), lr: float = 1e-2
) -> None:
    """A short training on a copy task (target = source text, after `target_prefix` ids such as
    mBART's target language); dropout is off in every config."""
    texts = corpus(400, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is several times faster on a shared machine
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = [texts[i] for i in torch.randint(0, len(texts), (16,), generator=g).tolist()]
        source = tokenizer([prefix + t for t in batch], return_tensors="pt", padding=True)
        labels = _labels(tokenizer, batch, list(target_prefix))
        loss = model(**source, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    model.eval()


def _new(model_class, config, seed: int = 0):
    """A randomly initialized model, the same on every run (tests compare outputs, not seeds)."""
    torch.manual_seed(seed)
    return model_class(config).eval()


def _labels(tokenizer, texts: list[str], target_prefix: list[int]) -> torch.Tensor:
    if not target_prefix:
        labels = tokenizer(texts, return_tensors="pt", padding=True).input_ids
        labels[labels == tokenizer.pad_token_id] = -100
        return labels
    rows = [[*target_prefix, *tokenizer(t, add_special_tokens=False).input_ids, tokenizer.eos_token_id] for t in texts]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-100] * (width - len(r)) for r in rows])


def _save(model, directory: Path, **generation) -> Path:
    if hasattr(model, "final_logits_bias"):  # a buffer training leaves at zero: make its import matter
        with torch.no_grad():
            model.final_logits_bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    for key, value in generation.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(directory)
    return directory


def marian(directory: Path, steps: int = 120, **generation) -> Path:
    """A multilingual-target Marian: `>>de<<`/`>>fr<<` tags, vocab.json ids laid out unlike the spm ids."""
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    tags = [f">>{lang}<<" for lang in LANGS]
    proto = train_spm(120, user_defined_symbols=tags)
    (directory / "source.spm").write_bytes(proto)
    (directory / "target.spm").write_bytes(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_control(i) and not sp.is_unknown(i)]
    vocab = {"</s>": 0, "<unk>": 1} | {p: i + 2 for i, p in enumerate(reversed(pieces))}
    vocab["<pad>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        dropout=0.0,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
    )
    model = _new(MarianMTModel, config)
    fit(model, MarianTokenizer.from_pretrained(str(directory)), prefix=">>de<< ", steps=steps)
    return _save(model, directory, bad_words_ids=[[pad]], **generation)


def bart(directory: Path, steps: int = 120, seed: int = 3, **generation) -> Path:
    from transformers import BartConfig, BartForConditionalGeneration, BartTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus(), trainer)
    bpe.model.save(str(directory))  # vocab.json, merges.txt
    tokenizer = BartTokenizer.from_pretrained(str(directory))
    tokenizer.save_pretrained(directory)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        dropout=0.0,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
    )
    model = _new(BartForConditionalGeneration, config, seed)
    fit(model, tokenizer, steps=steps)
    return _save(model, directory, **({"forced_bos_token_id": 0} | generation))


def mbart(directory: Path, steps: int = 120, seed: int = 3, **generation) -> Path:
    from transformers import MBartConfig, MBartForConditionalGeneration, MBartTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sentencepiece.bpe.model").write_bytes(train_spm(100))
    tokenizer = MBartTokenizer.from_pretrained(str(directory), src_lang="en_XX")
    tokenizer.save_pretrained(directory)
    (directory / "sentencepiece.bpe.model").unlink()
    config = MBartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        dropout=0.0,
        scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    model = _new(MBartForConditionalGeneration, config, seed)
    german = tokenizer.convert_tokens_to_ids("de_DE")
    fit(model, tokenizer, steps=steps, target_prefix=[german], lr=3e-3)  # pre-norm: 1e-2 learns nothing
    return _save(model, directory, forced_bos_token_id=german, **generation)


def t5(directory: Path, gated: bool = False, steps: int = 120, **generation) -> Path:
    """T5 v1.0 (ReLU, tied and scaled head) or, with `gated`, v1.1/flan-style gated-GELU."""
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spiece.model").write_bytes(train_spm(100, pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    tokenizer = T5Tokenizer.from_pretrained(str(directory), extra_ids=4)
    tokenizer.save_pretrained(directory)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=3,
        num_decoder_layers=2,  # depths differ on purpose (transformers 5 sizes T5's cache by num_layers)
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu" if gated else "relu",
        tie_word_embeddings=not gated,
        decoder_start_token_id=0,
        dropout_rate=0.0,
    )
    model = _new(T5ForConditionalGeneration, config)
    fit(model, tokenizer, steps=steps)
    return _save(model, directory, **generation)


def pegasus(directory: Path, steps: int = 120, **generation) -> Path:
    from transformers import PegasusConfig, PegasusForConditionalGeneration, PegasusTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spiece.model").write_bytes(train_spm(100, pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    tokenizer = PegasusTokenizer.from_pretrained(str(directory), offset=4)
    tokenizer.save_pretrained(directory)
    config = PegasusConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        dropout=0.0,
        activation_function="relu",
        scale_embedding=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        forced_eos_token_id=1,
    )
    model = _new(PegasusForConditionalGeneration, config)
    fit(model, tokenizer, steps=steps)
    return _save(model, directory, **generation)


# -- decoder-only checkpoints (GPT-2, Llama, Qwen2) ---------------------------------------------------

LLAMA_CHAT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bpe(specials: list[str], pre_tokenizer, vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A BPE vocabulary and merges trained on the corpus, `specials` first."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel) else []
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    return model["vocab"], [tuple(pair) for pair in model["merges"]]


def prompts(n: int = 12, seed: int = 5) -> list[str]:
    """Starts of corpus-like sentences, 1 to 9 words: batches of prompts of different lengths."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(1 + (i * 5) % 9)) for i in range(n)]


def chain_sentences(n: int = 400, seed: int = 3) -> list[str]:
    """Sentences in which each word determines the next (word i is followed by word 7i + 3 mod N)
    and every sixth word ends the sentence: a language a tiny model learns in a few steps, whose
    greedy continuations depend on the prompt's last word and end at varied lengths."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        i = rng.randrange(len(WORDS))
        words = [WORDS[i]]
        while i % 6 and len(words) < 20:
            i = (7 * i + 3) % len(WORDS)
            words.append(WORDS[i])
        sentences.append(" ".join(words))
    return sentences


def fit_lm(model, tokenizer, eos: int, steps: int = 150, seed: int = 0, lr: float = 1e-2) -> None:
    """A short language-model training on `chain_sentences` that end with `eos`: continuations then
    depend on the prompt, end with EOS at varied lengths, and have well-separated logits."""
    texts = chain_sentences()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = [[*tokenizer(texts[i]).input_ids, eos] for i in torch.randint(0, len(texts), (16,), generator=g)]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [eos] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    model.eval()


def gpt2(directory: Path, steps: int = 150, **generation) -> Path:
    """GPT-2: byte-level BPE, learned positions, tied head; 3 heads of 12 (odd sizes on purpose)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = _bpe(["<|endoftext|>"], pre_tokenizers.ByteLevel(add_prefix_space=False), 300)
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(directory)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=36,
        n_head=3,
        n_layer=2,
        n_inner=60,
        n_positions=96,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = _new(GPT2LMHeadModel, config)
    fit_lm(model, tokenizer, eos, steps)
    return _save(model, directory, **generation)


def llama(directory: Path, steps: int = 150, rope: dict | None = None, **generation) -> Path:
    """Llama with grouped K/V heads (6 query heads, 2 K/V heads of 8), an untied head, Llama 3.1
    RoPE scaling whose three frequency bands all occur, a SentencePiece-style (Metaspace) BPE that
    adds BOS, and a Llama-2-style chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = _bpe(["<unk>", "<s>", "</s>"], pre_tokenizers.Metaspace(), 200)
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tokenizer.chat_template = LLAMA_CHAT
    tokenizer.save_pretrained(directory)
    rope = rope or {
        "rope_type": "llama3",
        "rope_theta": 500.0,
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=72,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=128,
        rope_parameters=rope,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = _new(LlamaForCausalLM, config)
    fit_lm(model, tokenizer, tokenizer.eos_token_id, steps)
    return _save(model, directory, **generation)


def qwen2(directory: Path, steps: int = 150, **generation) -> Path:
    """Qwen2 with one K/V head (MQA) of 10, Q/K/V biases, a tied head, a model vocabulary larger
    than the tokenizer's, a ChatML template, and two EOS tokens (`<|im_end|>` first, as in
    Qwen2.5-Instruct; the model learns to end with the other, `<|endoftext|>`)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab, merges = _bpe(specials, pre_tokenizers.ByteLevel(add_prefix_space=False), 300)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=specials[1:])
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(directory)
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = Qwen2Config(
        vocab_size=len(tokenizer) + 5,
        hidden_size=40,
        intermediate_size=56,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
        tie_word_embeddings=True,
        eos_token_id=endoftext,
        pad_token_id=endoftext,
    )
    model = _new(Qwen2ForCausalLM, config)
    with torch.no_grad():  # Qwen2 initializes its Q/K/V biases to zero: make their import matter
        for name, p in model.named_parameters():
            if name.endswith("proj.bias"):
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    fit_lm(model, tokenizer, endoftext, steps)
    return _save(model, directory, **({"eos_token_id": [im_end, endoftext], "pad_token_id": endoftext} | generation))


def mistral(directory: Path, steps: int = 150, **generation) -> Path:
    """Mistral with a sliding window of 4 keys (shorter than most prompts, so that it matters)."""
    from transformers import LlamaTokenizer, MistralConfig, MistralForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = _bpe(["<unk>", "<s>", "</s>"], pre_tokenizers.Metaspace(), 200)
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tokenizer.save_pretrained(directory)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        sliding_window=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = _new(MistralForCausalLM, config)
    fit_lm(model, tokenizer, tokenizer.eos_token_id, steps)
    return _save(model, directory, **generation)
