"""`heed bench memory`: model size on disk and resident memory, heed vs CTranslate2 on the same
weights, in one run (issue 20's measurements).

The reference checkpoint (loadtests/reference.py) is exported by heed (fp32 and int8) and
converted by CTranslate2 (float32 and int8). For each:
- disk: the bytes of the model directory (heed: graphs, manifest, tokenizer; CTranslate2:
  model.bin and its vocabularies), next to the checkpoint's own safetensors;
- idle: the resident set (VmRSS) of a whole `heed serve` once ready and settled, against a process
  that holds only a `ctranslate2.Translator` (the "bare translator": no server, no tokenizer);
- peak: the high-water mark (VmHWM) while 64 clients send `/v1/generate` (24 -> 48 tokens) to heed
  for `--seconds`, against the translator decoding batches of 64 of the same sources as long;
- after: heed's resident set `--settle` seconds after the load stopped (memory given back).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from pathlib import Path

from loadtests.bench_engine import NEW_TOKENS, prepare_heed
from loadtests.bench_http import level
from loadtests.memory_probe import ct2_child, memory
from loadtests.reference import build_checkpoint, source_texts
from loadtests.server import HeedServer

CLIENTS = 64
MIB = 1 << 20


def directory_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def measure_ct2(checkpoint: Path, work: Path, quantization: str, seconds: float, threads: int) -> dict:
    import ctranslate2
    from transformers import MarianTokenizer

    directory = work / f"ct2-{quantization}"
    if not (directory / "model.bin").is_file():
        ctranslate2.converters.TransformersConverter(str(checkpoint)).convert(
            str(directory), quantization=quantization, force=True
        )
    tokenizer = MarianTokenizer.from_pretrained(checkpoint)
    texts = source_texts(checkpoint, CLIENTS)
    batch = [tokenizer.convert_ids_to_tokens(tokenizer(t).input_ids) for t in texts]
    context = multiprocessing.get_context("spawn")  # nothing of this process's memory in the child
    out = context.Queue()
    child = context.Process(
        target=ct2_child, args=(str(directory), quantization, batch, NEW_TOKENS, seconds, threads, out)
    )
    child.start()
    result = out.get(timeout=seconds + 300)
    child.join()
    return {"disk": directory_bytes(directory), **result}


def measure_heed(directory: Path, checkpoint: Path, work: Path, seconds: float, settle: float, threads: int) -> dict:
    repo = work / f"repo-{directory.name}"
    repo.mkdir(exist_ok=True)
    link = repo / directory.name
    if not link.exists():
        link.symlink_to(directory.resolve(), target_is_directory=True)
    env = {"HEED_INTRA_OP_THREADS": str(threads), "HEED_KV_ROWS": str(CLIENTS), "HEED_LOG_LEVEL": "warning"}
    server = HeedServer(repo, work / f"serve-{directory.name}.log", **env)
    try:
        server.wait_ready(300)
        time.sleep(5)
        idle = memory(server.process.pid)["VmRSS"]
        texts = source_texts(checkpoint, CLIENTS)
        load = asyncio.run(level(server.url, directory.name, texts, CLIENTS, seconds, stream=False))
        peak = memory(server.process.pid)["VmHWM"]
        time.sleep(settle)
        after = memory(server.process.pid)["VmRSS"]
    finally:
        server.stop()
    return {"disk": directory_bytes(directory), "idle": idle, "peak": peak, "after": after, "load": load}


def table(results: dict[str, dict], safetensors: int) -> str:
    rows = [
        "| | disk MB | idle RSS MiB | peak RSS MiB | RSS after load MiB |",
        "|---|---|---|---|---|",
        f"| HF safetensors | {safetensors / 1e6:.0f} | | | |",
    ]
    for name, r in results.items():
        after = f"{r['after'] / MIB:.0f}" if "after" in r else ""
        rows.append(f"| {name} | {r['disk'] / 1e6:.0f} | {r['idle'] / MIB:.0f} | {r['peak'] / MIB:.0f} | {after} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="heed bench memory", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("artifacts/bench"), help="checkpoints, models, results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30, help="load per engine")
    parser.add_argument("--settle", type=float, default=60, help="seconds after heed's load before 'after'")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = build_checkpoint(args.work / "reference-hf")
    results: dict[str, dict] = {}
    for name, directory in prepare_heed(checkpoint, args.work).items():
        results[name] = measure_heed(directory, checkpoint, args.work, args.seconds, args.settle, args.threads)
    for quantization in ("float32", "int8"):
        results[f"ct2-{quantization}"] = measure_ct2(checkpoint, args.work, quantization, args.seconds, args.threads)
    safetensors = sum(f.stat().st_size for f in checkpoint.glob("*.safetensors"))
    print(table(results, safetensors))
    path = args.work / "memory.json"
    path.write_text(json.dumps({"threads": args.threads, "safetensors": safetensors, "results": results}, indent=2))
    print(f"wrote {path}")
    return 0
