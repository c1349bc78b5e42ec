"""`heed bench decoder`: decoder-only generation, heed vs transformers vs CTranslate2's Generator
on the same weights, in one run.

The reference is a Llama-shaped model of about 100M parameters (d_model 768, 12 layers, 12 query
heads sharing 4 K/V heads, SwiGLU 2048, RoPE, vocabulary 32000, tied head) with random weights, built locally from
`transformers.LlamaConfig` and saved as a Hugging Face folder with a byte-level BPE tokenizer
trained here. heed imports it with `heed export --from-hf --task generate` (fp32 and int8),
CTranslate2 converts it (float32, int8), transformers runs it in PyTorch. Every prompt is
PROMPT_TOKENS tokens and every engine generates exactly NEW_TOKENS tokens; throughput is generated
tokens per second, the median of `--repeats` rounds, each round running every engine once in
turn (loadtests/bench_engine.py: `timed`).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from loadtests.bench_engine import Run, Workload, current_export, timed

NEW_TOKENS = 64
PROMPT_TOKENS = 128
VOCAB_SIZE = 32000
WORKLOADS = [Workload("greedy b1", 1, 1), Workload("greedy b32", 32, 1)]
_WORDS = (
    "the a quick brown fox jumps over lazy dog hello world how are you today numbers written with digits long"
    " report about weather in mountains sea river city house tree green red blue small large old new first last"
).split()


def build_checkpoint(directory: Path, seed: int = 0) -> Path:
    """Write the reference Llama folder once (weights, config, tokenizer); reuse it after."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (directory / "config.json").is_file():
        return directory
    rng = random.Random(seed)
    corpus = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 30))) for _ in range(500)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_tokens([f"<w{i}>" for i in range(tokenizer.get_vocab_size(), VOCAB_SIZE)])  # a real vocabulary's size
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).eval().save_pretrained(directory)
    return directory


def prompts(checkpoint: Path, count: int, seed: int = 1) -> list[str]:
    """Texts that the checkpoint's tokenizer turns into exactly PROMPT_TOKENS ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < count:
        ids = tokenizer(" ".join(rng.choice(_WORDS) for _ in range(160)), add_special_tokens=False).input_ids
        text = tokenizer.decode(ids[:PROMPT_TOKENS])
        if len(tokenizer(text, add_special_tokens=False).input_ids) == PROMPT_TOKENS:
            texts.append(text)
    return texts


def heed_engine(model_dir: Path, threads: int) -> Run:
    from service.engine import Engine
    from service.settings import EngineConfig

    engine = Engine(model_dir, EngineConfig(intra_op_threads=threads, kv_rows=256, provider="cpu", ort_spinning=True))
    options = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}

    def run(texts: list[str], beam: int) -> None:
        results = engine.generate(texts, options | {"beam_size": beam})
        assert all(r.output_tokens >= NEW_TOKENS - 1 for r in results)

    return run


def transformers_engine(checkpoint: Path, threads: int) -> Run:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.set_num_threads(threads)
    model = LlamaForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, padding_side="left")
    tokenizer.pad_token = tokenizer.eos_token

    def run(texts: list[str], beam: int) -> None:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beam, do_sample=False
            )
        assert out.shape[1] == batch.input_ids.shape[1] + NEW_TOKENS

    return run


def ctranslate2_engine(checkpoint: Path, work: Path, quantization: str, threads: int) -> Run:
    import ctranslate2
    from transformers import AutoTokenizer

    out = work / f"ct2-decoder-{quantization}"
    if not (out / "model.bin").is_file():
        converter = ctranslate2.converters.TransformersConverter(str(checkpoint))
        converter.convert(str(out), quantization=quantization, force=True)
    generator = ctranslate2.Generator(str(out), device="cpu", compute_type=quantization, intra_threads=threads)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def run(texts: list[str], beam: int) -> None:
        tokens = [tokenizer.convert_ids_to_tokens(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        results = generator.generate_batch(
            tokens,
            beam_size=beam,
            max_length=NEW_TOKENS,
            min_length=NEW_TOKENS,
            include_prompt_in_result=False,
        )
        assert all(len(r.sequences_ids[0]) >= NEW_TOKENS - 1 for r in results)

    return run


def prepare_heed(checkpoint: Path, work: Path) -> dict[str, Path]:
    from export.hf import export_checkpoint

    dirs = {}
    for quantize in (None, "int8"):
        name = f"heed-decoder-{quantize or 'fp32'}"
        directory = work / name
        if not current_export(directory, quantize):
            export_checkpoint(checkpoint, directory, name=name, task="generate", quantize=quantize)
        dirs[name.replace("-decoder", "")] = directory
    return dirs


RATIOS = {
    "heed-fp32 / ct2-float32": ("heed-fp32", "ct2-float32"),
    "heed-int8 / ct2-int8": ("heed-int8", "ct2-int8"),
    "heed-fp32 / transformers": ("heed-fp32", "transformers"),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="heed bench decoder", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("artifacts/bench"), help="checkpoints, models, results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="heed-fp32,heed-int8,transformers,ct2-float32,ct2-int8")
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = build_checkpoint(args.work / "reference-llama-100m-hf")
    wanted = args.engines.split(",")
    factories: dict[str, Callable[[], Run]] = {
        "transformers": lambda: transformers_engine(checkpoint, args.threads),
        "ct2-float32": lambda: ctranslate2_engine(checkpoint, args.work, "float32", args.threads),
        "ct2-int8": lambda: ctranslate2_engine(checkpoint, args.work, "int8", args.threads),
    }
    if any(e.startswith("heed") for e in wanted):
        for name, directory in prepare_heed(checkpoint, args.work).items():
            factories[name] = lambda d=directory: heed_engine(d, args.threads)
    engines = {name: factories[name]() for name in wanted}
    workloads = [w for w in WORKLOADS if w.name in args.workloads.split(",")]
    texts = prompts(checkpoint, max(w.batch for w in workloads))

    results = []
    for workload in workloads:
        row = timed(engines, texts[: workload.batch], workload.beam, args.repeats, NEW_TOKENS)
        ratios = {label: row[a] / row[b] for label, (a, b) in RATIOS.items() if a in row and b in row}
        results.append({"workload": workload.name, **asdict(workload), "tokens_per_s": row, "ratios": ratios})
        cells = "  ".join(f"{name} {value:8.1f}" for name, value in row.items())
        print(f"{workload.name:11s}  {cells}  |  " + "  ".join(f"{k} {v:.2f}x" for k, v in ratios.items()), flush=True)
    path = args.work / "decoder.json"
    path.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2))
    print(f"wrote {path}")
    return 0
