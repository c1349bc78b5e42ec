"""Which int8 kernels fit the CPU heed runs on, from its flags (docs/performance.md, "int8").

heed's int8 graphs hold signed weights (U8S8: unsigned activations times signed weights). x86
CPUs with VNNI (`avx512_vnni`, `avx_vnni`) or AMX (`amx_int8`) multiply them exactly and fastest;
x86 CPUs without either go through `vpmaddubsw`, which saturates 16-bit sums, so there ONNX
Runtime is told to turn the weights unsigned when it loads the graph (w + 128, zero point + 128:
the same dequantized weights, computed by its exact U8U8 kernel). Other architectures keep the
signed weights: their int8 dot products do not saturate.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

Int8Kernels = Literal["signed", "unsigned"]

# Linux's /proc/cpuinfo names of the extensions that give ONNX Runtime (MLAS) an exact U8S8 kernel
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags (Linux's x86 `flags` line), or None where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def int8_kernels(flags: frozenset[str] | None, machine: str | None = None) -> Int8Kernels:
    """The int8 weight format that is exact and fastest on a CPU with these flags and machine
    name (`platform.machine()` when None). x86 flags that cannot be read count as no VNNI:
    unsigned weights are exact everywhere, signed ones only where the CPU's kernels do not saturate."""
    machine = (machine or platform.machine()).lower()
    if machine not in X86:
        return "signed"
    return "signed" if flags is not None and flags & VNNI_FLAGS else "unsigned"


def choose_int8_kernels(
    setting: Literal["auto", "signed", "unsigned"] = "auto",
    flags: frozenset[str] | None = None,
    machine: str | None = None,
) -> Int8Kernels:
    """The setting, or with `auto` what fits this CPU (its flags read when not given)."""
    if setting != "auto":
        return setting
    return int8_kernels(cpu_flags() if flags is None else flags, machine)
