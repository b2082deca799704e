"""Timed calls keep the memory they free: no page faults per call whose number depends on the
process's history (issue 19), and memory given back once timing ends."""

import ctypes
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_modelopt.allocator import freed_memory_kept
from pytest_modelopt.measure import Interleaver, MeasureSettings
from pytest_modelopt.worker import Loader, Worker

glibc_only = pytest.mark.skipif(
    sys.platform != "linux",
    reason="mallopt and malloc_trim are glibc's: elsewhere the system's allocator is left as is",
)
MIB = 1 << 20


def faults_per_call(calls: int = 20) -> float:
    """Minor page faults of malloc'ing, touching and freeing 16 MiB, per call. Through libc
    itself: numpy asks for transparent huge pages on large arrays, and the kernel grants them or
    not as memory allows, which would make the count the kernel's choice."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def call() -> None:
        block = libc.malloc(16 * MIB)
        ctypes.memset(block, 1, 16 * MIB)  # touch every page
        libc.free(block)

    call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def released_on_free() -> float:
    """Bytes the resident size drops by when a touched 16 MiB block is freed."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(16 * MIB)
    ctypes.memset(block, 1, 16 * MIB)
    held = _resident_bytes()
    libc.free(block)
    return held - _resident_bytes()


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


@glibc_only
def test_freed_memory_is_kept_while_timing_and_given_back_after() -> None:
    """Before, the faults depend on what the process freed earlier (glibc moves its thresholds):
    not asserted. While timing, a freed block stays resident and the next call reuses it without
    a fault; when timing ends, what was kept goes back to the kernel. (Not asserted: that a block
    malloc'ed afterwards is unmapped on free. glibc serves it from a free chunk already in the heap
    where one is large enough, which depends on what else the process did: CI's run read 4 KiB.)"""
    pages = 16 * MIB // 4096
    with freed_memory_kept() as allocator:
        assert allocator.startswith("freed memory kept (glibc mmap and trim thresholds")
        assert faults_per_call() < 0.01 * pages
        assert released_on_free() < 1 * MIB
        kept = _resident_bytes()
    assert kept - _resident_bytes() >= 15 * MIB


AFTER_TIMING = """
from pytest_modelopt.allocator import freed_memory_kept
from test_allocator import MIB, faults_per_call, released_on_free
with freed_memory_kept():
    faults_per_call()
print(released_on_free() >= 15 * MIB)
"""


@glibc_only
def test_after_timing_a_fresh_process_gives_a_freed_large_block_back() -> None:
    """glibc's defaults are back once timing ends: in a fresh process, whose heap holds no other
    free chunk that large, a 16 MiB block malloc'ed afterwards goes back to the kernel when freed
    (unmapped, or trimmed from the heap top; with neither threshold restored it stays)."""
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests_dir, *sys.path])}
    run = subprocess.run(
        [sys.executable, "-c", AFTER_TIMING], env=env, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "True", run.stderr


def pid_runner():
    return lambda batch: None


@glibc_only
def test_both_sides_say_how_their_memory_was_handled() -> None:
    """A worker keeps freed memory for its life; the in-process side while timed; the JSON
    carries each side's place, threads and allocator beside its median."""
    worker = Worker(Loader("test_allocator:pid_runner"), None, threads=1, fallback=lambda: None)
    settings = MeasureSettings(warmup_s=0.05, max_time=0.3, block_s=0.01, transition_s=0.002)
    data = Interleaver(worker, lambda: None, settings).run().to_dict()
    for side, place in (("variant", "worker process"), ("reference", "in process")):
        assert data[side]["isolation"] == place
        assert data[side]["allocator"].startswith("freed memory kept")
        assert data[side]["threads"] == data["threads"]
        assert data[side]["stats"]["p50"] > 0


def test_the_system_allocator_can_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """PYTEST_MODELOPT_SYSTEM_ALLOCATOR=1 times what a plain process pays, and says so."""
    monkeypatch.setenv("PYTEST_MODELOPT_SYSTEM_ALLOCATOR", "1")
    with freed_memory_kept() as allocator:
        assert allocator == "system default (PYTEST_MODELOPT_SYSTEM_ALLOCATOR is set)"
