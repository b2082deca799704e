"""The counting meter's sides: a comparison's pair loaded into a counting worker, one meter each.

The engine (:class:`~pytest_modelopt.measure.Interleaver`) asks each ``CountedSide`` for samples
as it asks a timing side; a sample here is the instructions of one call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from pytest_modelopt.counting.client import CountingWorker, shared_worker
from pytest_modelopt.counting.counts import CYCLES_MODEL, Counts, per_call
from pytest_modelopt.counting.valgrind import VALGRIND_OPTIONS
from pytest_modelopt.measure.settings import MeasureSettings
from pytest_modelopt.worker import Loader, WorkerUnavailable

ISA_NOTE = (
    "valgrind emulates no AVX-512 or AMX: runtimes took their AVX2 (or older) kernels, so "
    "counts describe those kernels, not the ones this CPU runs natively"
)
# Counted rounds per comparison: calls vary so little that three bound a narrow interval.
COUNTED_ROUNDS = 3


class CountedPair:
    """A comparison's two sides in a counting worker.

    Loaded by the first side that starts, unloaded when the last one closes.
    """

    def __init__(self, worker: CountingWorker, sides: list[tuple[Loader, Any]], label: str):
        self.worker = worker
        self.sides = sides
        self.label = label
        self.slots: list[int] = []
        self.load_seconds = 0.0
        self._users = 0

    def acquire(self) -> None:
        """Count a side in as a user, loading the pair into the worker for the first one."""
        if not self.slots:
            begin = time.perf_counter()
            self.slots = self.worker.load(self.sides, label=self.label)
            self.load_seconds = time.perf_counter() - begin
        self._users += 1

    def release(self) -> None:
        """Count a side out; unload the pair when the last one is gone."""
        self._users -= 1
        if self._users <= 0 and self.slots:
            slots, self.slots, self._users = self.slots, [], 0
            with contextlib.suppress(WorkerUnavailable):
                self.worker.unload(slots)


class CountedSide:
    """A meter: one side of a comparison counted in a :class:`CountingWorker` slot.

    ``sample(calls)`` returns instructions per call; the full counts are kept for the report.
    """

    unit = "instructions"
    isolation = "worker process under valgrind (callgrind)"
    # Counts do not see page faults: the counting worker keeps glibc's defaults, so that counted
    # baselines stay comparable (pytest_modelopt.allocator is for wall-clock timing).
    allocator = "system default"
    fallback: Callable[[], Any] | None = None

    def __init__(self, pair: CountedPair, index: int, label: str) -> None:
        self.pair = pair
        self.index = index
        self.label = label
        self.counts: list[Counts] = []
        self.seconds: list[float] = []  # wall time of each counted call, under valgrind
        self._started = False

    @property
    def worker(self) -> CountingWorker:
        """Return the counting worker the side is loaded in."""
        return self.pair.worker

    @property
    def running(self) -> bool:
        """Return whether the side has been started and not closed."""
        return self._started

    def start(self) -> None:
        """Load the pair into the worker, if this is the first side to start."""
        if not self._started:
            self.pair.acquire()
            self._started = True

    def sample(self, calls: int) -> list[float]:
        """Count ``calls`` calls; return the instructions of each, keeping the full counts."""
        begin = time.perf_counter()
        counted = self.worker.count(self.pair.slots[self.index], calls, label=self.label)
        self.seconds += [(time.perf_counter() - begin) / max(calls, 1)] * calls
        self.counts += counted
        return [c.instructions for c in counted]

    def close(self) -> None:
        """Release the pair; the last side to close unloads it."""
        if self._started:
            self._started = False
            self.pair.release()

    def report(self, skip: int) -> dict[str, Any]:
        """Per-call medians of the counts after the first ``skip`` (engine warm-up calls)."""
        kept = self.counts[skip:] or self.counts
        return {
            **per_call(kept),
            "isa": self.worker.isa,
            "isa_note": ISA_NOTE,
            "cycles_model": CYCLES_MODEL,
            "valgrind": self.worker.valgrind,
            "valgrind_options": " ".join(VALGRIND_OPTIONS),
            "worker_start_seconds": self.worker.start_seconds,
            "load_seconds": self.pair.load_seconds,
            "seconds_per_call": statistics.median(self.seconds) if self.seconds else None,
            "worker_pid": self.worker.pid,
        }


def counted_sides(
    variant: tuple[Loader, Any],
    reference: tuple[Loader, Any],
    *,
    threads: int | None,
    label: str,
    worker: CountingWorker | None = None,
) -> tuple[CountedSide, CountedSide]:
    """Return the variant's and the reference's meters, loaded together into a counting worker.

    The worker is the session's shared one unless given; each side is rebuilt with one thread
    where its loader takes a thread count.
    """
    sides = [(single_threaded(loader), batch) for loader, batch in (variant, reference)]
    pair = CountedPair(worker or shared_worker(threads), sides, label)
    return CountedSide(pair, 0, f"{label} variant"), CountedSide(pair, 1, f"{label} reference")


def single_threaded(loader: Loader) -> Loader:
    """Return the loader with its runtime's own pool at one thread.

    ONNX Runtime's ``threads``, OpenVINO's ``INFERENCE_NUM_THREADS``: valgrind runs threads one
    at a time, and a pool's spinning would add instructions that differ from one process to the
    next. A loader that wraps another (the testing aid's slowed run) has the one it wraps set too.
    """
    kwargs = {
        name: single_threaded(value) if isinstance(value, Loader) else value
        for name, value in loader.kwargs.items()
    }
    if "threads" in kwargs:
        kwargs["threads"] = 1
    config = kwargs.get("config")
    if isinstance(config, dict) and "INFERENCE_NUM_THREADS" in config:
        kwargs["config"] = {**config, "INFERENCE_NUM_THREADS": 1}
    return dataclasses.replace(loader, kwargs=kwargs)


def counting_settings(settings: MeasureSettings) -> MeasureSettings:
    """Return the engine's settings for the counting meter.

    One thread; no first call, warm-up or settling of the engine's (the worker warms each side up
    natively and once under valgrind, and counts do not drift); Student's t interval from three
    rounds, since counts barely vary, and checked after every round, since a counted round is
    dear; and the three rounds whatever they cost (a counted round is bounded and predictable, up
    to minutes for a large model), within a time cap that allows for valgrind.
    """
    return dataclasses.replace(
        settings,
        meter="instructions",
        threads=1,
        warmup_s=0.0,
        warmup_calls=0,
        settle=False,
        first_call=False,
        estimator="student_t",
        min_rounds=COUNTED_ROUNDS,
        check_every=1,
        overrun=math.inf,
        max_time=max(settings.max_time, 60.0),
    )
