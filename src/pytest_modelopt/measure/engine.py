"""The engine: a variant timed interleaved with its reference (``Interleaver``), or a call alone.

The protocol (first calls, warm-up until settled, rounds in random order, the stopping rule) is
the package docstring's.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pytest_modelopt.allocator import freed_memory_kept
from pytest_modelopt.measure.comparison import Comparison, Timing
from pytest_modelopt.measure.conditions import current_threads, fixed_threads, gc_paused
from pytest_modelopt.measure.meters import Call, CudaEvents, Side
from pytest_modelopt.measure.settings import MeasureSettings
from pytest_modelopt.stats import ESTIMATORS, fewest_rounds, relative_width
from pytest_modelopt.worker import InProcess, Worker, WorkerUnavailable


class Interleaver:
    """Times ``variant`` against ``reference``; :meth:`run` may be called again for more rounds.

    Each side is a callable (timed in this process) or a :class:`Meter`: a
    :class:`~pytest_modelopt.worker.Worker` (timed alone in its own process, in blocks) or a
    :class:`~pytest_modelopt.counting.CountedSide` (instructions counted under valgrind). A worker
    that cannot start falls back to its in-process call, and the reason is recorded in the
    comparison's ``isolation``.
    """

    def __init__(
        self,
        variant: Call | Side,
        reference: Call | Side,
        settings: MeasureSettings,
        *,
        device: str = "cpu",
        cross_runtime: bool = False,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._cuda = device.startswith("cuda")
        self._sides: list[Side] = [self._side(s) for s in (variant, reference)]
        self._isolation = [side.isolation for side in self._sides]
        self._cross_runtime = cross_runtime or any(isinstance(s, Worker) for s in self._sides)
        self.settings = settings
        self._log = log
        self._rng = np.random.default_rng(settings.seed)
        self._timings: tuple[Timing, Timing] | None = None
        self._ratios: list[float] = []
        self._elapsed = 0.0
        self._threads: int | None = None
        self._allocator = ["", ""]
        self._segments: list[tuple[int, int]] = []  # each process pair's rounds: [begin, end)

    def _side(self, side: Call | Side) -> Side:
        if hasattr(side, "sample"):
            return side  # type: ignore[return-value]
        call: Call = side
        return CudaEvents(call) if self._cuda else InProcess(call)

    def run(self, max_time: float | None = None) -> Comparison:
        """Warm up, then add rounds until precise enough or out of time.

        The time cap is stretched (up to ``settings.overrun`` times) for as many rounds as a finite
        interval needs: fewer could decide nothing, so stopping there would waste the time spent.
        Worker sides are timed in ``settings.process_pairs`` fresh pairs of processes, one after
        the other, each given its share of the time; a later run adds one fresh pair, whose
        rounds (as a later run's in this process) join those before.
        """
        settings = self.settings
        budget = settings.max_time if max_time is None else max_time
        pairs = self._process_pairs()
        stopped_by = ""
        for index in range(pairs):
            with (
                self._started(),
                fixed_threads(settings.threads),
                freed_memory_kept() as allocator,
                gc_paused(),
            ):
                in_workers = any(isinstance(side, Worker) for side in self._sides)
                # A side fallen back to this process has no fresh pair to come: the rest is its.
                share = budget * (1 if in_workers else pairs - index) / pairs
                self._allocator = [getattr(side, "allocator", allocator) for side in self._sides]
                start = time.perf_counter()
                self._warm_up(share)
                first_round = len(self._ratios)
                # Each of several pairs stops by its own rounds; one pair, by all so far.
                own = first_round if settings.process_pairs > 1 else 0
                stopped_by = self._rounds(start + share, start + settings.overrun * share, own)
                if in_workers:
                    self._segments.append((first_round, len(self._ratios)))
                self._threads = current_threads()
                self._elapsed += time.perf_counter() - start
            if not in_workers:
                break
        return self._comparison(stopped_by)

    def _process_pairs(self) -> int:
        """How many fresh process pairs this run times in.

        ``settings.process_pairs`` on the first run of a comparison with a worker side this
        engine starts itself, else one. A pair of processes carries an effect of its own for its
        whole life (an A/A comparison of eager against itself in two processes read 0.95-0.97 in
        every comparison of one pair, 0.99-1.08 in another's), which the rounds of one pair cannot
        show; timed in several pairs, that effect moves the estimate less and shows in the
        interval, at the cost of each pair's start and warm-up.
        """
        starts_workers = any(isinstance(s, Worker) and not s.running for s in self._sides)
        first = self._timings is None
        return max(1, self.settings.process_pairs) if first and starts_workers else 1

    @contextlib.contextmanager
    def _started(self) -> Iterator[None]:
        """Start worker sides (falling back to in-process calls, with the reason); end them.

        A worker its caller started already is used as it is and left running. A meter without
        a fallback (the counting meter) that cannot start fails the measurement with the reason.
        """
        started: list[Side] = []
        for index, side in enumerate(self._sides):
            if side.running:
                continue
            try:
                side.start()
                started.append(side)
                self._log(f"{getattr(side, 'label', 'side')}: {side.isolation}")
            except WorkerUnavailable as error:
                fallback = getattr(side, "fallback", None)
                if fallback is None:
                    for other in started:
                        other.close()
                    raise
                self._sides[index] = self._side(fallback)
                self._isolation[index] = f"in process: {error}"
                self._log(f"{getattr(side, 'label', 'side')}: timed in this process ({error})")
        try:
            yield
        finally:
            for side in started:
                side.close()

    def _warm_up(self, budget: float) -> None:
        """First calls, then calls alternating both sides until long enough and settled.

        In-process sides stay warm between runs; a worker side is a fresh process each run and
        is warmed up again.
        """
        settings = self.settings
        if self._timings is None and not settings.first_call:
            self._timings = (Timing(first_call_s=math.nan), Timing(first_call_s=math.nan))
            return
        if self._timings is None:
            first = [side.sample(1)[0] for side in self._sides]
            self._timings = (Timing(first_call_s=first[0]), Timing(first_call_s=first[1]))
        elif any(isinstance(side, Worker) for side in self._sides):
            for side in self._sides:
                side.sample(1)
        else:
            return
        warm: tuple[list[float], list[float]] = ([], [])
        deadline = time.perf_counter() + max(settings.warmup_s * 5, budget * 0.3)
        start = time.perf_counter()
        chunk = 5 if self._cross_runtime else 1
        while True:
            for side, samples in zip(self._sides, warm, strict=True):
                samples.extend(side.sample(chunk))
            enough = (
                time.perf_counter() - start >= settings.warmup_s
                and len(warm[0]) >= settings.warmup_calls
            )
            settled = not settings.settle or all(_settled(s) for s in warm)
            if (enough and settled) or time.perf_counter() > deadline:
                break
        for timing, samples in zip(self._timings, warm, strict=True):
            timing.warmup_calls += len(samples)
            timing.warmup_s += float(sum(samples))
            if self._cross_runtime:
                typical = max(float(np.median(samples[-10:])), 1e-7)
                timing.block_calls = max(2, math.ceil(settings.block_s / typical))
                timing.discarded_calls = max(1, math.ceil(settings.transition_s / typical))
        self._log(f"warmed up: {len(warm[0])} calls each in {time.perf_counter() - start:.1f} s")

    def _rounds(self, deadline: float, last_deadline: float, begin: int = 0) -> str:
        """Add rounds until the rounds from index ``begin`` on are precise enough, or time is up."""
        assert self._timings is not None
        variant, reference = self._timings
        settings = self.settings
        floor = self._fewest_rounds()
        self._estimate([1.0] * floor)  # imports scipy now, so a check's cost is its own below
        stretched = False
        next_check = len(self._ratios) + settings.min_rounds
        next_check_time = 0.0
        variant_side, reference_side = self._sides
        orders: Iterator[Any] = iter(())
        while True:
            variant_first = next(orders, None)
            if variant_first is None:  # random orders drawn in batches: cheap per round
                orders = iter(self._rng.random(1024) < 0.5)
                variant_first = next(orders)
            if variant_first:
                v = self._block(variant_side, variant)
                r = self._block(reference_side, reference)
            else:
                r = self._block(reference_side, reference)
                v = self._block(variant_side, variant)
            self._ratios.append(r / v if v > 0 else math.inf)
            now = time.perf_counter()
            if len(self._ratios) >= next_check and now >= next_check_time:
                estimate, interval = self._estimate(self._ratios[begin:])
                if relative_width(estimate, interval) <= settings.target_width:
                    return "target width"
                rounds = len(self._ratios) - begin
                next_check = len(self._ratios) + max(settings.check_every, rounds // 10)
                # Checks get dearer with the rounds: keep them to a few % of the time.
                next_check_time = now + 30 * (time.perf_counter() - now)
            if now >= deadline:
                if len(self._ratios) - begin >= floor or now >= last_deadline:
                    return "time cap"
                if not stretched:
                    stretched = True
                    self._log(
                        f"{len(self._ratios) - begin} rounds at the time cap; going on to "
                        f"{floor}, the fewest that bound a {settings.confidence:.1%} interval"
                    )

    def _estimate(self, ratios: list[float]) -> tuple[float, tuple[float, float]]:
        return ESTIMATORS[self.settings.estimator](ratios, self.settings.confidence)

    def _fewest_rounds(self) -> int:
        """Return the fewest rounds that bound an interval.

        The signed-rank's 11 at 99.9%, else the settings' ``min_rounds`` (at least 2).
        """
        if self.settings.estimator == "signed_rank":
            return fewest_rounds(self.settings.confidence)
        return max(2, self.settings.min_rounds)

    def _block(self, side: Side, timing: Timing) -> float:
        """Time one block of calls; keep the samples after the transition; return their median."""
        if timing.block_calls == 1:  # one call a side: the common, same-runtime case
            sample = self._time(side.call) if type(side) is InProcess else side.sample(1)[0]
            timing.samples_s.append(sample)
            return sample
        block = side.sample(timing.discarded_calls + timing.block_calls)[timing.discarded_calls :]
        timing.samples_s.extend(block)
        return float(np.median(block))

    @staticmethod
    def _time(call: Call) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    def _comparison(self, stopped_by: str) -> Comparison:
        assert self._timings is not None
        ratios = list(self._ratios)
        speedup, interval = self._estimate(ratios)
        pairs: list[dict[str, Any]] = []
        estimates: list[float] = []
        if len(self._segments) > 1:
            for begin, end in self._segments:
                estimate, (low, high) = self._estimate(ratios[begin:end])
                pairs.append({"speedup": estimate, "interval": [low, high], "rounds": end - begin})
                if math.isfinite(estimate):
                    estimates.append(estimate)
        # Asked for pairs, the interval reaches every pair's estimate, so that the spread between
        # pairs (their own effects) shows in it; not their intervals, which a pair's few rounds
        # make wide. (A single pair measured again pools its rounds, as before.)
        if self.settings.process_pairs > 1 and estimates:
            interval = (min(interval[0], *estimates), max(interval[1], *estimates))
        counts = {}
        for name, side, timing in zip(
            ("variant", "reference"), self._sides, self._timings, strict=True
        ):
            report = getattr(side, "report", None)
            if report is not None:  # the counting meter: events per call after the warm-up
                counts[name] = report(skip=int(self.settings.first_call) + timing.warmup_calls)
        return Comparison(
            variant=self._timings[0],
            reference=self._timings[1],
            ratios=ratios,
            speedup=speedup,
            speedup_interval=interval,
            confidence=self.settings.confidence,
            rounds=len(ratios),
            elapsed_s=self._elapsed,
            stopped_by=stopped_by,
            threads=self._threads,
            cross_runtime=self._cross_runtime,
            isolation={"variant": self._isolation[0], "reference": self._isolation[1]},
            allocator={"variant": self._allocator[0], "reference": self._allocator[1]},
            meter=self.settings.meter,
            unit=str(getattr(self._sides[0], "unit", "s")),
            counts=counts,
            process_pairs=pairs,
        )


def time_alone(
    call: Call, settings: MeasureSettings, seconds: float, *, device: str = "cpu"
) -> list[float]:
    """Return the per-call latencies of one callable timed alone (no reference).

    For absolute figures such as throughput at other batch sizes. Same protocol otherwise:
    threads fixed, GC off, warm-up by time and count until settled.
    """
    side = CudaEvents(call) if device.startswith("cuda") else InProcess(call)
    with fixed_threads(settings.threads), freed_memory_kept(), gc_paused():
        warm = side.sample(1)
        start = time.perf_counter()
        while True:
            warm += side.sample(1)
            enough = time.perf_counter() - start >= settings.warmup_s
            if enough and len(warm) > settings.warmup_calls and _settled(warm[1:]):
                break
            if time.perf_counter() - start > max(5 * settings.warmup_s, seconds):
                break
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(samples) < 10:
            samples += side.sample(1)
    return samples


def _settled(samples: list[float], window: int = 10, tolerance: float = 0.05) -> bool:
    """Whether the median of the last window is within tolerance of the window before it."""
    if len(samples) < 2 * window:
        return len(samples) >= window  # a short warm-up cannot show a trend; count suffices
    last = float(np.median(samples[-window:]))
    before = float(np.median(samples[-2 * window : -window]))
    return abs(last - before) <= tolerance * before
