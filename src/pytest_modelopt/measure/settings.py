"""How the engine times a comparison: ``MeasureSettings``, from threads to the stopping rule."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_modelopt.defaults import (
    CONFIDENCE,
    MAX_TIME_S,
    NOISE_THRESHOLD,
    OVERRUN,
    PROCESS_PAIRS,
    TARGET_WIDTH,
    WARMUP_S,
)
from pytest_modelopt.stats import ESTIMATORS


@dataclass(frozen=True)
class MeasureSettings:
    """How the engine times a comparison: threads, warm-up, time cap, rounds and stopping rule.

    Timing stops once the speedup's ``confidence`` interval is narrower than ``target_width``,
    or at ``max_time`` (stretched up to ``overrun`` times for the rounds a finite interval
    needs).
    """

    threads: int | None = None
    warmup_s: float = WARMUP_S
    warmup_calls: int = 10
    max_time: float = MAX_TIME_S
    min_rounds: int = 20
    target_width: float = TARGET_WIDTH
    confidence: float = CONFIDENCE
    noise_threshold: float = NOISE_THRESHOLD
    seed: int = 0
    block_s: float = 0.05
    transition_s: float = 0.04
    workers: bool = True
    process_pairs: int = PROCESS_PAIRS
    meter: str = "wall"
    settle: bool = True
    first_call: bool = True
    check_every: int = 10
    estimator: str = "signed_rank"
    overrun: float = OVERRUN
    # Profile each wall-clock result by operator (a baseline is being recorded: its entry keeps
    # the profile, against which a later regression is explained).
    profile_operators: bool = False

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}"
            )
