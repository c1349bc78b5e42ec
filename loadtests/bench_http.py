"""`heed bench http`: heed behind its HTTP server, 1 to 64 concurrent clients.

Serves heed's int8 import of the reference checkpoint (`heed bench engine` prepares it in the same
work folder) with `heed serve` in a subprocess on 127.0.0.1. Each client sends `/v1/generate`
requests one after another (24 source tokens, 48 target tokens forced) for a fixed time, waiting
for the JSON answer (`json` mode, what apps mostly do) or reading Server-Sent Events (`stream`
mode, which gives the time to first token); the server, the tokenizer and the clients share the
machine's cores with ONNX Runtime, as in production. Reports throughput (target tokens/s),
p50/p99 latency and time to first token. Then the ratios to heed's own offline batch-64
throughput and to CTranslate2 int8 at batch 64: the top JSON level again, taking turns with those
two offline runs (`--turns` times, medians), because this machine's speed drifts too much for
ratios between figures measured minutes apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import httpx

from loadtests import bench_translate
from loadtests.bench_engine import NEW_TOKENS, Run, ctranslate2_engine, heed_engine, prepare_heed
from loadtests.reference import build_checkpoint, source_texts
from loadtests.server import HeedServer

CONCURRENCY = [1, 8, 32, 64]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client(
    http: httpx.AsyncClient, model: str, texts: list[str], until: float, samples: list, stream: bool
) -> None:
    i = 0
    while time.perf_counter() < until:
        body = {
            "model": model,
            "input": texts[i % len(texts)],
            "stream": stream,
            "max_new_tokens": NEW_TOKENS,
            "min_new_tokens": NEW_TOKENS,
        }
        start = time.perf_counter()
        if stream:
            first = None
            async with http.stream("POST", "/v1/generate", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    if first is None and "token" in event:
                        first = time.perf_counter() - start
                    if event.get("done"):
                        samples.append((time.perf_counter() - start, first, event["output_tokens"]))
        else:
            response = await http.post("/v1/generate", json=body)
            response.raise_for_status()
            samples.append((time.perf_counter() - start, None, response.json()["usage"]["output_tokens"]))
        i += 1


async def level(base: str, model: str, texts: list[str], clients: int, seconds: float, stream: bool) -> dict:
    samples: list[tuple[float, float, int]] = []
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:
        start = time.perf_counter()
        runs = [client(http, model, texts[c:], start + seconds, samples, stream) for c in range(clients)]
        await asyncio.gather(*runs)
        wall = time.perf_counter() - start
    latency = [s[0] for s in samples]
    ttft = [s[1] for s in samples if s[1] is not None]
    return {
        "mode": "stream" if stream else "json",
        "clients": clients,
        "requests": len(samples),
        "tokens_per_s": sum(s[2] for s in samples) / wall,
        "p50_latency_s": statistics.median(latency),
        "p99_latency_s": percentile(latency, 0.99),
        "p50_ttft_s": statistics.median(ttft) if ttft else None,
        "p99_ttft_s": percentile(ttft, 0.99) if ttft else None,
    }


def side_by_side(
    base: str, model: str, texts: list[str], clients: int, seconds: float, offline: dict[str, Run], turns: int
) -> dict:
    """The JSON level at `clients` and each offline engine at batch `clients`, in turns; medians."""
    rates: dict[str, list[float]] = {"http": []} | {name: [] for name in offline}
    for _ in range(turns):
        rates["http"].append(asyncio.run(level(base, model, texts, clients, seconds, stream=False))["tokens_per_s"])
        for name, run in offline.items():
            start = time.perf_counter()
            run(texts[:clients], 1)
            rates[name].append(clients * NEW_TOKENS / (time.perf_counter() - start))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {"clients": clients, "tokens_per_s": medians} | {
        f"http / {name}": medians["http"] / medians[name] for name in offline
    }


def translate_modes(args: argparse.Namespace, modes: list[str]) -> int:
    repo = bench_translate.prepare_numbers(args.work)
    env = {"HEED_INTRA_OP_THREADS": str(args.threads), "HEED_KV_ROWS": "64", "HEED_QUEUE_SIZE": "256"}
    server = HeedServer(repo, args.work / "http-translate-server.log", **env)
    try:
        server.wait_ready(300)
        clients = list(map(int, args.clients.split(",")))
        rows = bench_translate.run(server.url, modes, clients, args.texts_per_request, args.seconds)
    finally:
        server.stop()
    (args.work / "http-translate.json").write_text(json.dumps({"model": "heed-numbers", "results": rows}, indent=2))
    print(f"wrote {args.work / 'http-translate.json'}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="heed bench http", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("artifacts/bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30, help="per concurrency level")
    parser.add_argument("--model", default="heed-int8", choices=["heed-int8", "heed-fp32"])
    parser.add_argument("--clients", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--turns", type=int, default=3, help="turns of the side-by-side HTTP vs offline runs")
    parser.add_argument(
        "--modes",
        default="json,stream",
        help="json: one answer per request; stream: Server-Sent Events (gives TTFT); libretranslate,translate: "
        "many short texts per request to heed-numbers (loadtests/bench_translate.py)",
    )
    parser.add_argument("--texts-per-request", type=int, default=16, help="libretranslate and translate modes")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if set(modes) <= set(bench_translate.MODES):
        return translate_modes(args, modes)

    checkpoint = build_checkpoint(args.work / "reference-hf")
    directory = prepare_heed(checkpoint, args.work)[args.model]
    repo = args.work / "http-repo"
    repo.mkdir(exist_ok=True)
    link = repo / args.model
    if not link.exists():
        link.symlink_to(directory.resolve())
    texts = source_texts(checkpoint, 64)
    env = {"HEED_INTRA_OP_THREADS": str(args.threads), "HEED_KV_ROWS": "64", "HEED_QUEUE_SIZE": "256"}
    server = HeedServer(repo, args.work / "http-server.log", **env)
    base = server.url
    try:
        server.wait_ready(300)
        results = []
        for clients in map(int, args.clients.split(",")):
            for mode in args.modes.split(","):  # modes take turns at each level: drift hits both alike
                row = asyncio.run(level(base, args.model, texts, clients, args.seconds, stream=mode == "stream"))
                results.append(row)
                ttft = (
                    f"  TTFT p50 {row['p50_ttft_s'] * 1000:7.1f} ms  p99 {row['p99_ttft_s'] * 1000:7.1f} ms"
                    if row["p50_ttft_s"] is not None
                    else ""
                )
                print(
                    f"{mode:6s} {clients:3d} clients  {row['tokens_per_s']:8.1f} tok/s  "
                    f"p50 {row['p50_latency_s']:6.2f} s  p99 {row['p99_latency_s']:6.2f} s  "
                    f"(p99/p50 {row['p99_latency_s'] / row['p50_latency_s']:.2f}){ttft}",
                    flush=True,
                )
        top = max(int(c) for c in args.clients.split(","))
        offline = {
            f"offline {args.model}": heed_engine(directory, args.threads),
            "offline ct2-int8": ctranslate2_engine(checkpoint, args.work, "int8", args.threads),
        }
        compared = side_by_side(base, args.model, texts, top, args.seconds, offline, args.turns)
    finally:
        server.stop()
    rates = "  ".join(f"{name} {value:.1f}" for name, value in compared["tokens_per_s"].items())
    print(f"side by side, {top} clients / batch {top}, median of {args.turns} turns (tok/s): {rates}")
    for name in offline:
        print(f"HTTP json {top} clients / {name} batch {top}: {compared[f'http / {name}']:.2f}x")
    (args.work / "http.json").write_text(
        json.dumps({"model": args.model, "results": results, "side_by_side": compared}, indent=2)
    )
    print(f"wrote {args.work / 'http.json'}")
    return 0
