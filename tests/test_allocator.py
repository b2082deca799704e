"""Timed calls keep the memory they free: no page faults per call whose number depends on the
process's history (issue 19), and memory given back once timing ends."""

import resource
import sys

import numpy as np
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
    """Minor page faults of allocating, touching and freeing 16 MiB, per call."""

    def call() -> None:
        block = np.empty(16 * MIB, dtype=np.uint8)
        block[::4096] = 1  # touch every page
        del block

    call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


@glibc_only
def test_freed_memory_is_kept_while_timing_and_given_back_after() -> None:
    """Before, the faults depend on what the process freed earlier (glibc moves its thresholds):
    not asserted. While timing, none; after, glibc's documented defaults, so every block is
    mapped afresh and the memory goes back to the kernel when freed."""
    pages = 16 * MIB // 4096
    with freed_memory_kept() as allocator:
        assert allocator.startswith("freed memory kept (glibc mmap and trim thresholds")
        assert faults_per_call() < 0.01 * pages  # the block is reused: its pages stay mapped
    assert faults_per_call() >= 0.1 * pages  # (a kernel may map more than a page per fault)


def pid_runner():
    return lambda batch: None


@glibc_only
def test_both_sides_say_how_their_memory_was_handled() -> None:
    """A worker keeps freed memory for its life; the in-process side while timed; the JSON
    carries each side's place, threads and allocator beside its median."""
    worker = Worker(Loader("test_allocator:pid_runner"), None, threads=1, fallback=lambda: None)
    settings = MeasureSettings(warmup_s=0.05, max_time_s=0.3, block_s=0.01, transition_s=0.002)
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
