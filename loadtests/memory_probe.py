"""What `heed bench memory` (loadtests/bench_memory.py) reads of a process's memory, and the
CTranslate2 process it measures: a module of its own, importing nothing heavy, so that the spawned
translator process holds the translator and nothing of the harness."""

from __future__ import annotations

import time
from pathlib import Path


def memory(pid: int | str = "self") -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the resident high-water mark) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def ct2_child(model: str, quantization: str, batch: list[list[str]], tokens: int, seconds: float, threads: int, out):
    """The translator alone: its resident set idle, then its high-water mark decoding `batch`
    (`tokens` tokens each) for `seconds`; put on `out`."""
    import ctranslate2

    translator = ctranslate2.Translator(
        model, device="cpu", compute_type=quantization, intra_threads=threads, inter_threads=1
    )
    time.sleep(2)
    idle = memory()["VmRSS"]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        translator.translate_batch(batch, max_decoding_length=tokens, min_decoding_length=tokens)
    out.put({"idle": idle, "peak": memory()["VmHWM"]})
