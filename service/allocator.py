"""Memory a burst took, handed back once it is over (glibc's `malloc_trim`).

heed's large buffers grow with the batch: ONNX Runtime's activations (allocated with malloc, as
heed runs it without its arena), the KV cache, numpy's temporaries. glibc gives a large freed
block back only while it is larger than its mmap threshold, which each such free raises (up to
32 MiB); smaller blocks come from heaps that it shrinks only from the top. After a burst of 64
clients `heed serve` kept 180 MiB more than idle for good. Fixing the threshold instead
(`mallopt`) returned it too, but cost 13% of the throughput at 64 clients: every large
allocation became a fresh mapping, zero-filled page by page. So the worker trims once its batch
has stayed empty a moment (service/worker.py). Other C libraries are left as they are.
"""

from __future__ import annotations

import ctypes
from functools import cache


@cache
def _glibc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    return libc if hasattr(libc, "malloc_trim") else None


def release_free_memory() -> None:
    """Return the allocator's free pages to the system (no-op where the C library is not glibc)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
