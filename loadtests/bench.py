"""`heed bench engine|http ...`: the benchmark harness (needs the export and bench extras)."""

from __future__ import annotations

import importlib
import sys

KINDS = {
    "engine": "loadtests.bench_engine",
    "http": "loadtests.bench_http",
    "long": "loadtests.bench_long",
    "decoder": "loadtests.bench_decoder",
    "memory": "loadtests.bench_memory",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in KINDS:
        print(f"usage: heed bench {{{','.join(KINDS)}}} [options]", file=sys.stderr)
        return 2
    return importlib.import_module(KINDS[argv[0]]).main(argv[1:])
