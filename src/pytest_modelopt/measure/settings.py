"""How the engine times a comparison: ``MeasureSettings``, from threads to the stopping rule."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_modelopt.stats import ESTIMATORS

# How far past its time cap a comparison may go to reach the rounds a finite interval needs.
OVERRUN = 4.0


@dataclass(frozen=True)
class MeasureSettings:
    """How the engine times a comparison: threads, warm-up, time cap, rounds and stopping rule.

    Timing stops once the speedup's ``confidence`` interval is narrower than ``target_width``,
    or at ``max_time_s`` (stretched up to ``overrun`` times for the rounds a finite interval
    needs).
    """

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
    workers: bool = True
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
