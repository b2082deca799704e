"""Timing a variant interleaved with its reference, until the speedup is known well enough.

Protocol, in order:

1. Threads are fixed (torch intra-op threads; default: the physical cores) and recorded.
2. Each callable's first call is timed alone and reported as first-call time: lazy
   initialization and JIT compilation never land in the samples.
3. Warm-up, alternating both callables, for at least ``warmup_s`` and ``warmup_calls`` calls each,
   and longer while the rolling median of either is still moving.
4. Rounds: each round times the variant and the reference once each, in a random order, with GC
   off. The per-round ratio reference/variant is what the speedup is estimated from: both halves
   of a round see the same machine state, so slow drift (thermal, a neighbour's load) cancels.
   Between two runtimes (torch and ONNX Runtime, say), a round times a *block* of calls of each:
   each runtime's idle thread pool keeps spinning for a while after its last call and slows the
   other's next calls (eager mobilenetv3 measured 14 ms alternated call by call with ONNX Runtime,
   6 ms alone; its first three calls after an ONNX Runtime block took 16, 11 and 10 ms), so the
   first calls of each block, for at least ``transition_s``, are discarded,
   and the round's ratio is the ratio of the two blocks' medians.
5. Rounds continue until the confidence interval of the median ratio is narrower than
   ``target_width`` (relative), or the time cap is reached. Raw samples are kept.

GPU variants are timed with a synchronize before each clock read (``device`` starting with
``cuda``), never a host clock around asynchronous work.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_modelopt.stats import Summary, median_interval, relative_width, summarize

Call = Callable[[], Any]


@dataclass(frozen=True)
class MeasureSettings:
    threads: int | None = None
    warmup_s: float = 1.0
    warmup_calls: int = 10
    max_time_s: float = 10.0
    min_rounds: int = 20
    target_width: float = 0.02
    confidence: float = 0.999
    noise_threshold: float = 0.25
    seed: int = 0
    block_s: float = 0.05
    transition_s: float = 0.04


@dataclass
class Timing:
    """What was measured of one callable."""

    first_call_s: float
    warmup_calls: int = 0
    warmup_s: float = 0.0
    samples_s: list[float] = field(default_factory=list)
    block_calls: int = 1
    discarded_calls: int = 0

    def summary(self) -> Summary:
        return summarize(self.samples_s)


@dataclass
class Comparison:
    """A variant timed against its reference."""

    variant: Timing
    reference: Timing
    ratios: list[float]
    speedup: float
    speedup_interval: tuple[float, float]
    confidence: float
    rounds: int
    elapsed_s: float
    stopped_by: str
    threads: int | None
    cross_runtime: bool = False

    @property
    def noise(self) -> float:
        """The larger relative IQR of the two sample sets."""
        return max(self.variant.summary().relative_iqr, self.reference.summary().relative_iqr)

    def to_dict(self, *, raw: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "speedup": self.speedup,
            "speedup_interval": list(self.speedup_interval),
            "confidence": self.confidence,
            "rounds": self.rounds,
            "elapsed_s": self.elapsed_s,
            "stopped_by": self.stopped_by,
            "threads": self.threads,
            "cross_runtime": self.cross_runtime,
            "noise": self.noise,
        }
        for side in ("variant", "reference"):
            timing: Timing = getattr(self, side)
            data[side] = {
                "first_call_s": timing.first_call_s,
                "warmup_calls": timing.warmup_calls,
                "warmup_s": timing.warmup_s,
                "block_calls": timing.block_calls,
                "discarded_calls": timing.discarded_calls,
                "stats": timing.summary().to_dict(),
            }
            if raw:
                data[side]["samples_s"] = timing.samples_s
        return data


class Interleaver:
    """Times ``variant`` against ``reference``; :meth:`run` may be called again for more rounds."""

    def __init__(
        self,
        variant: Call,
        reference: Call,
        settings: MeasureSettings,
        *,
        device: str = "cpu",
        cross_runtime: bool = False,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._calls = (variant, reference)
        self._cross_runtime = cross_runtime
        self.settings = settings
        self._timer = _synchronized_timer() if device.startswith("cuda") else time.perf_counter
        self._log = log
        self._rng = np.random.default_rng(settings.seed)
        self._timings: tuple[Timing, Timing] | None = None
        self._ratios: list[float] = []
        self._elapsed = 0.0
        self._threads: int | None = None

    def run(self, max_time_s: float | None = None) -> Comparison:
        """Warm up (first time only), then add rounds until precise enough or out of time."""
        settings = self.settings
        budget = settings.max_time_s if max_time_s is None else max_time_s
        with fixed_threads(settings.threads), gc_paused():
            start = time.perf_counter()
            if self._timings is None:
                self._timings = self._warm_up(budget)
            stopped_by = self._rounds(start + budget)
            self._threads = current_threads()
            self._elapsed += time.perf_counter() - start
        return self._comparison(stopped_by)

    def _warm_up(self, budget: float) -> tuple[Timing, Timing]:
        settings = self.settings
        timings = tuple(Timing(first_call_s=self._time(call)) for call in self._calls)
        warm: tuple[list[float], list[float]] = ([], [])
        deadline = time.perf_counter() + max(settings.warmup_s * 5, budget * 0.3)
        start = time.perf_counter()
        chunk = 5 if self._cross_runtime else 1
        while True:
            for call, samples in zip(self._calls, warm, strict=True):
                samples.extend(self._time(call) for _ in range(chunk))
            enough = (
                time.perf_counter() - start >= settings.warmup_s
                and len(warm[0]) >= settings.warmup_calls
            )
            if (enough and all(_settled(s) for s in warm)) or time.perf_counter() > deadline:
                break
        for timing, samples in zip(timings, warm, strict=True):
            timing.warmup_calls, timing.warmup_s = len(samples), float(sum(samples))
            if self._cross_runtime:
                typical = max(float(np.median(samples[-10:])), 1e-7)
                timing.block_calls = max(2, math.ceil(settings.block_s / typical))
                timing.discarded_calls = max(1, math.ceil(settings.transition_s / typical))
        self._log(f"warmed up: {len(warm[0])} calls each in {time.perf_counter() - start:.1f} s")
        return timings  # type: ignore[return-value]

    def _rounds(self, deadline: float) -> str:
        assert self._timings is not None
        variant, reference = self._timings
        settings = self.settings
        next_check = len(self._ratios) + settings.min_rounds
        variant_call, reference_call = self._calls
        orders: Iterator[Any] = iter(())
        while True:
            variant_first = next(orders, None)
            if variant_first is None:  # random orders drawn in batches: cheap per round
                orders = iter(self._rng.random(1024) < 0.5)
                variant_first = next(orders)
            if variant_first:
                v = self._block(variant_call, variant)
                r = self._block(reference_call, reference)
            else:
                r = self._block(reference_call, reference)
                v = self._block(variant_call, variant)
            self._ratios.append(r / v if v > 0 else math.inf)
            if len(self._ratios) >= next_check:
                estimate = float(np.median(self._ratios))
                interval = median_interval(self._ratios, settings.confidence)
                if relative_width(estimate, interval) <= settings.target_width:
                    return "precision"
                next_check = len(self._ratios) + max(10, len(self._ratios) // 10)
            if time.perf_counter() >= deadline:
                return "time cap"

    def _block(self, call: Call, timing: Timing) -> float:
        """Time one block of calls; keep the samples after the transition; return their median."""
        if timing.block_calls == 1:  # one call a side: the common, same-runtime case
            sample = self._time(call)
            timing.samples_s.append(sample)
            return sample
        for _ in range(timing.discarded_calls):
            self._time(call)
        block = [self._time(call) for _ in range(timing.block_calls)]
        timing.samples_s.extend(block)
        return block[0] if len(block) == 1 else float(np.median(block))

    def _time(self, call: Call) -> float:
        timer = self._timer
        start = timer()
        call()
        return timer() - start

    def _comparison(self, stopped_by: str) -> Comparison:
        assert self._timings is not None
        ratios = list(self._ratios)
        return Comparison(
            variant=self._timings[0],
            reference=self._timings[1],
            ratios=ratios,
            speedup=float(np.median(ratios)),
            speedup_interval=median_interval(ratios, self.settings.confidence),
            confidence=self.settings.confidence,
            rounds=len(ratios),
            elapsed_s=self._elapsed,
            stopped_by=stopped_by,
            threads=self._threads,
            cross_runtime=self._cross_runtime,
        )


def _settled(samples: list[float], window: int = 10, tolerance: float = 0.05) -> bool:
    """Whether the median of the last window is within tolerance of the window before it."""
    if len(samples) < 2 * window:
        return len(samples) >= window  # a short warm-up cannot show a trend; count suffices
    last = float(np.median(samples[-window:]))
    before = float(np.median(samples[-2 * window : -window]))
    return abs(last - before) <= tolerance * before


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage once, then keep the collector off while timing."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """Fix torch's intra-op thread count for the block (when torch is in use) and restore it."""
    torch = sys.modules.get("torch")
    if torch is None or threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def current_threads() -> int | None:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def _synchronized_timer() -> Callable[[], float]:
    import torch

    def timer() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()

    return timer
