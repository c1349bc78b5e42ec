"""`heed bench http --modes libretranslate,translate`: many short texts per request, as Mastodon
and Weblate send them, through LibreTranslate's `/translate` and heed's native `/v1/translate`.

Both modes need a model addressed by language pair, which the random-weight reference checkpoint
is not: they serve heed's default translation model (`heed-numbers`, exported from the committed
weights into the work folder) and send it English numbers. Each client posts requests of
`--texts-per-request` texts one after another; the modes take turns at each concurrency level.
Reports texts/s and p50/p99 latency per mode, and LibreTranslate / native.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from pathlib import Path

import httpx

from export.data.numbers import FORMS, english

MODES = {"libretranslate": "/translate", "translate": "/v1/translate"}


def prepare_numbers(work: Path) -> Path:
    """A model repository holding heed-numbers (exported once)."""
    from export.defaults import prepare

    repo = work / "translate-repo"
    if not (repo / "heed-numbers" / "manifest.json").is_file():
        prepare(repo, names=["heed-numbers"])
    return repo


def number_texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [english(rng.randrange(1, 1_000_000), rng.choice(FORMS), rng) for _ in range(count)]


def body(mode: str, texts: list[str]) -> dict:
    if mode == "libretranslate":
        return {"q": texts, "source": "en", "target": "de"}
    return {"model": "heed-numbers", "text": texts, "target_lang": "de"}


async def level(base: str, mode: str, texts: list[str], clients: int, per_request: int, seconds: float) -> dict:
    latencies: list[float] = []
    done = 0

    async def client(http: httpx.AsyncClient, offset: int, until: float) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < until:
            batch = [texts[(i + k) % len(texts)] for k in range(per_request)]
            start = time.perf_counter()
            response = await http.post(MODES[mode], json=body(mode, batch))
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)
            done += per_request
            i += per_request

    async with httpx.AsyncClient(base_url=base, timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http, c * per_request, start + seconds) for c in range(clients)))
        wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "mode": mode,
        "clients": clients,
        "texts_per_request": per_request,
        "requests": len(latencies),
        "texts_per_s": done / wall,
        "p50_latency_s": statistics.median(ordered),
        "p99_latency_s": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def run(base: str, modes: list[str], clients: list[int], per_request: int, seconds: float) -> list[dict]:
    texts = number_texts(512)
    rows = []
    for count in clients:
        for mode in modes:  # modes take turns at each level: drift hits both alike
            row = asyncio.run(level(base, mode, texts, count, per_request, seconds))
            rows.append(row)
            print(
                f"{mode:14s} {count:3d} clients x {per_request} texts  {row['texts_per_s']:8.1f} texts/s  "
                f"p50 {row['p50_latency_s']:6.2f} s  p99 {row['p99_latency_s']:6.2f} s",
                flush=True,
            )
    if set(modes) == set(MODES):
        for count in clients:
            rate = {r["mode"]: r["texts_per_s"] for r in rows if r["clients"] == count}
            print(f"{count:3d} clients: libretranslate / native {rate['libretranslate'] / rate['translate']:.2f}x")
    return rows
