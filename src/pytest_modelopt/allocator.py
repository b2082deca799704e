"""Timed calls keep the memory they free, in every process that times them.

glibc's malloc gives large freed blocks back to the kernel: blocks above the mmap threshold are
unmapped on free, and free memory at the top of the heap above the trim threshold is trimmed.
Eager torch allocates its activations afresh on every call, so each call faults those pages in
again: resnet50 at 1x3x384x384 took about 23,000 minor page faults per call. glibc also moves both
thresholds with what the process freed before, so how many pages a call faults, and so its time,
depends on the process's history. Measured on an AVX-512 EPYC, 2 cores
(``benchmarks/allocator_probe.py``, resnet50 at 384): four workers timing the same eager model,
blocks interleaved: two with glibc's defaults read 229 and 239 ms, two keeping their freed memory
189 and 186 ms (15-16% faster, 1.7% apart). The engine timing eager in a worker against eager in
the pytest process read the worker 15% slower (in-process/worker 0.847, median of 4 runs) with
glibc's defaults, and 8% faster (1.082, 4 runs) with freed memory kept in both: what is left is
not page faults but the session's history in that process (a fresh process that only builds the
model reads 0.96-1.01; issue 19 is open for it).

So while a comparison is timed, every process that makes the calls keeps what it frees: a worker
for its whole life, the pytest process for the duration of the timing, after which it goes back to
glibc's documented defaults and gives the kept memory back (``malloc_trim``), so that memory
figures measured afterwards start from a trimmed heap. Runtimes with their own arenas (ONNX
Runtime, OpenVINO, TFLite) are unaffected; torch-based sides stop paying a page-fault tax whose
size was an accident of the process. Elsewhere than glibc, or with the environment variable
``PYTEST_MODELOPT_SYSTEM_ALLOCATOR=1`` (to time what a plain process would pay), nothing is
changed, and the timing records say so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap and stay there when freed. Not glibc's own ceiling for
# its moving thresholds (32 MiB mmap, 64 MiB trim): with those, two workers timing resnet50 at 384
# read 11% apart, as a call's frees at the heap top still crossed the trim threshold now and then.
KEPT_BYTES = 1 << 30
FALLBACK_MMAP_BYTES = 32 << 20  # the most glibc before 2.26 accepts
DEFAULT_BYTES = 128 << 10  # glibc's documented default for both thresholds
SYSTEM = "system default"
OPT_OUT = "PYTEST_MODELOPT_SYSTEM_ALLOCATOR"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, where this process runs on it (mallopt and malloc_trim are glibc's)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    glibc = all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim"))
    return libc if glibc else None


def keep_freed_memory() -> str:
    """Keep freed blocks of up to 1 GiB in this process from now on.

    Returns what was set (the timing records carry it), or ``"system default"`` where this is
    not glibc.
    """
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
        return f"{SYSTEM} ({OPT_OUT} is set)"
    libc = _libc()
    if libc is None:
        return SYSTEM
    mmap_bytes = KEPT_BYTES
    if not libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes):
        mmap_bytes = FALLBACK_MMAP_BYTES
        if not libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes):
            return SYSTEM
    libc.mallopt(M_TRIM_THRESHOLD, KEPT_BYTES)
    return f"freed memory kept (glibc mmap and trim thresholds {mmap_bytes >> 20} MiB)"


def return_freed_memory() -> None:
    """Restore glibc's default thresholds and give back the memory kept meanwhile."""
    libc = _libc()
    if libc is None:
        return
    libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_BYTES)
    libc.malloc_trim(0)


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[str]:
    """Keep freed memory in this process for the block, then return it to the system.

    ``with freed_memory_kept() as allocator:`` time calls in this process; ``allocator`` says how
    memory was handled.
    """
    allocator = keep_freed_memory()
    try:
        yield allocator
    finally:
        if not allocator.startswith(SYSTEM):
            return_freed_memory()
