"""The measurements of `heed bench memory` (loadtests/bench_memory.py), on this process and a
folder made here: what it reads must be what /proc and the file system say."""

from __future__ import annotations

import os

import numpy as np

from loadtests.bench_memory import MIB, directory_bytes, table
from loadtests.memory_probe import memory


def test_resident_memory_and_its_high_water_mark_follow_an_allocation():
    before = memory()
    block = np.ones(64 * MIB, dtype=np.uint8)  # touched: resident
    during = memory(os.getpid())
    assert during["VmRSS"] - before["VmRSS"] >= 60 * MIB
    slack = MIB  # the kernel folds its per-CPU counters into the mark lazily
    assert during["VmHWM"] >= during["VmRSS"] - slack
    del block
    assert memory()["VmHWM"] >= during["VmRSS"] - slack  # the mark stays after the memory is given back


def test_directory_bytes_count_every_file_below(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 24)
    assert directory_bytes(tmp_path) == 1024


def test_the_table_has_a_row_per_engine_and_after_only_where_measured():
    results = {
        "heed-int8": {"disk": 305e6, "idle": 469 * MIB, "peak": 729 * MIB, "after": 480 * MIB},
        "ct2-int8": {"disk": 74e6, "idle": 109 * MIB, "peak": 307 * MIB},
    }
    rows = table(results, safetensors=283e6).splitlines()
    assert rows[2] == "| HF safetensors | 283 | | | |"
    assert rows[3] == "| heed-int8 | 305 | 469 | 729 | 480 |"
    assert rows[4] == "| ct2-int8 | 74 | 109 | 307 |  |"
