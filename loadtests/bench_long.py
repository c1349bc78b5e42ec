"""`heed bench long`: encoder time against input length, full attention vs local + global.

Two encoders of Marian-base size (d_model 512, 6 layers, 8 heads, random weights), one with full
attention and one with local attention (window radius 128) plus global tokens, exported through
heed's normal path and timed in ONNX Runtime for one input of 512 to 8192 tokens. Full attention
grows quadratically; the banded local + global encoder should grow linearly. Prints a table with
each time relative to 512 tokens, writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

LENGTHS = [512, 1024, 2048, 4096, 8192]


def build(work: Path, name: str, attention: dict) -> Path:
    import torch

    from export.demo import tokenizer
    from export.model import Seq2SeqModel
    from export.package import write_model_dir
    from service.manifest import ModelSpec, SpecialTokens

    directory = work / name
    if (directory / "manifest.json").is_file():
        return directory
    spec = ModelSpec(
        vocab_size=tokenizer().get_vocab_size(),
        d_model=512,
        n_heads=8,
        d_ff=2048,
        max_positions=max(LENGTHS),
        encoder={"layers": 6, "attention": attention},
        decoder={"layers": 1, "attention": {"kind": "causal"}},
        activation="silu",
    )
    torch.manual_seed(0)
    write_model_dir(
        Seq2SeqModel(spec).eval(),
        tokenizer(),
        directory,
        name=name,
        task="summarize",
        architecture="heed",
        special_tokens=SpecialTokens(pad_id=0, eos_id=1, decoder_start_id=0),
        check=False,
    )
    return directory


def encoder_seconds(directory: Path, length: int, threads: int, repeats: int) -> float:
    import onnxruntime as ort

    from service.runner import session_options

    session = ort.InferenceSession(
        str(directory / "encoder.onnx"),
        session_options(threads, spinning=True),  # offline, as `heed bench engine`
        providers=["CPUExecutionProvider"],
    )
    ids = np.random.default_rng(0).integers(3, 100, (1, length)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="heed bench long", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("artifacts/bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--global-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    models = {
        "full": build(args.work, "long-full", {"kind": "full"}),
        f"local{args.window}+global{args.global_tokens}": build(
            args.work,
            f"long-local{args.window}-g{args.global_tokens}",
            {"kind": "local_global", "window": args.window, "global_tokens": args.global_tokens},
        ),
    }
    results: dict[str, dict[int, float]] = {name: {} for name in models}
    print(f"{'tokens':>7}  " + "  ".join(f"{name:>28}" for name in models))
    for length in LENGTHS:
        for name, directory in models.items():
            results[name][length] = encoder_seconds(directory, length, args.threads, args.repeats)
        cells = "  ".join(
            f"{results[n][length] * 1000:10.1f} ms ({results[n][length] / results[n][LENGTHS[0]]:5.1f}x 512)"
            for n in models
        )
        print(f"{length:>7}  {cells}", flush=True)
    (args.work / "long.json").write_text(json.dumps({"threads": args.threads, "seconds": results}, indent=2))
    plot(results, args.work / "long.png")
    print(f"wrote {args.work / 'long.json'} and {args.work / 'long.png'}")
    return 0


def plot(results: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, seconds in results.items():
        ax.plot(list(seconds), [s * 1000 for s in seconds.values()], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input tokens")
    ax.set_ylabel("encoder time (ms, batch 1)")
    ax.set_title("Encoder cost vs input length (Marian-base size, 6 layers)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
