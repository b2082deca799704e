"""What a comparison measured: each side's ``Timing`` and the ``Comparison`` of the two.

The speedup with its interval, the per-round ratios it was estimated from, how the rounds
stopped, and how each side was timed, as JSON-ready values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pytest_modelopt.stats import Summary, summarize


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
        """Summarize the samples."""
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
    isolation: dict[str, str] = field(default_factory=dict)
    allocator: dict[str, str] = field(default_factory=dict)
    meter: str = "wall"
    unit: str = "s"
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Worker sides timed in several process pairs: each pair's estimate, interval and rounds.
    process_pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def noise(self) -> float:
        """Relative IQR of the per-round speedups, from which the interval is built.

        Not of the raw calls: between runtimes, the first calls of each block are slower while
        idle thread pools wake, which spreads the calls without moving the block medians.
        """
        return summarize(self.ratios).relative_iqr if self.ratios else math.inf

    def to_dict(self, *, raw: bool = True) -> dict[str, Any]:
        """Return the comparison as JSON-ready values; ``raw`` includes each side's samples."""
        data: dict[str, Any] = {
            "speedup": self.speedup,
            "speedup_interval": list(self.speedup_interval),
            "confidence": self.confidence,
            "rounds": self.rounds,
            "elapsed_s": self.elapsed_s,
            "stopped_by": self.stopped_by,
            "threads": self.threads,
            "cross_runtime": self.cross_runtime,
            "isolation": self.isolation,
            "noise": self.noise,
            "meter": self.meter,
            "unit": self.unit,
        }
        if self.counts:
            data["counts"] = self.counts
        if self.process_pairs:
            data["process_pairs"] = self.process_pairs
        for side in ("variant", "reference"):
            timing: Timing = getattr(self, side)
            data[side] = {
                # how this side was timed: where, on how many threads, with which allocator
                "isolation": self.isolation.get(side, ""),
                "threads": self.threads,
                "allocator": self.allocator.get(side, ""),
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
