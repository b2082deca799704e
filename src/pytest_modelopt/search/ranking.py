"""Ranking feasible candidates: ties decided by the intervals, the recommendation, the Pareto front.

A candidate is tied for best when no other feasible candidate is surely better than it; among the
tied, the recommendation is the first by the tie-breaks; the front is the feasible candidates
that nobody dominates on speed, accuracy and size (the package docstring states the rules).
"""

from __future__ import annotations

import math
from typing import Any

from pytest_modelopt.budget import Measured, Metric
from pytest_modelopt.search.candidates import Candidate, _value
from pytest_modelopt.search.objective import Objective

# Metrics that can be the speed axis of the Pareto front (else the latency objective's is).
SPEED_METRICS = frozenset(
    {
        "speedup",
        "throughput",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p99_ms",
        "instructions_ratio",
        "instructions_per_call",
        "estimated_cycles",
        "cycles_ratio",
    }
)
# The accuracy axis of the Pareto front, the first that every candidate has.
ACCURACY_AXES = ("accuracy", "top1_agreement", "mse")


def _rank(feasible: list[Candidate], objective: Objective, accuracy: str | None) -> None:
    """Rank the feasible candidates and mark the ties and the recommendation.

    Ties for best share rank 1; the rest are ranked by median; the recommendation is the first
    tied candidate by the tie-breaks (the package docstring).
    """
    if not feasible:
        return
    name, higher = objective.metric.name, objective.higher_is_better
    # The best guaranteed level: the highest lower end (the lowest upper end, lower-is-better)
    # among the measurements that can decide; one flagged too noisy guarantees nothing.
    ends = [_bounds(c.metrics[name]) for c in feasible]
    deciding = [e for c, e in zip(feasible, ends, strict=True) if _trusted(c.metrics[name])]
    deciding = deciding or ends
    guaranteed = max(low for low, _ in deciding) if higher else min(high for _, high in deciding)
    for candidate, (low, high) in zip(feasible, ends, strict=True):
        candidate.tied = high >= guaranteed if higher else low <= guaranteed
        median = candidate.metrics[name].value
        candidate.tied_by_width = candidate.tied and (
            median < guaranteed if higher else median > guaranteed
        )
    tied = [c for c in feasible if c.tied]
    rest = sorted((c for c in feasible if not c.tied), key=lambda c: _order(c, objective))
    for candidate in tied:
        candidate.rank = 1
    for index, candidate in enumerate(rest, start=len(tied) + 1):
        candidate.rank = index

    def preference(candidate: Candidate) -> tuple[Any, ...]:
        quality = _value(candidate, accuracy) if accuracy else 0.0
        if accuracy == "mse":
            quality = -quality
        return (
            not _trusted(candidate.metrics[name]),
            candidate.tied_by_width,
            candidate.steps,
            _value(candidate, "size_bytes"),
            -quality,
            _order(candidate, objective),
        )

    min(tied, key=preference).recommended = True


def _trusted(measured: Measured) -> bool:
    """Return whether a figure can decide.

    Not flagged (too noisy, too few samples), and its interval, if any, bounded on both sides.
    """
    if measured.undecidable is not None:
        return False
    return measured.interval is None or all(math.isfinite(side) for side in measured.interval)


def _order(candidate: Candidate, objective: Objective) -> tuple[float, str]:
    """By median, best first; then by name, so that the order is stable."""
    value = candidate.metrics.get(objective.metric.name, Measured(math.nan)).value
    return (-value if objective.higher_is_better else value, candidate.label)


def _mark_front(feasible: list[Candidate], speed: Metric, accuracy: str | None) -> None:
    for candidate in feasible:
        candidate.pareto = not any(
            _dominates(other, candidate, speed, accuracy)
            for other in feasible
            if other is not candidate
        )


def _dominates(a: Candidate, b: Candidate, speed: Metric, accuracy: str | None) -> bool:
    """Return whether ``a`` dominates ``b``.

    ``a`` is at least as good as ``b`` on speed (within the intervals), accuracy and size, and
    better on one of them.
    """
    a_measured, b_measured = (c.metrics.get(speed.name, Measured(math.nan)) for c in (a, b))
    a_speed, b_speed = _bounds(a_measured), _bounds(b_measured)
    if speed.higher_is_better:
        a_surely_faster, b_surely_faster = a_speed[0] > b_speed[1], b_speed[0] > a_speed[1]
    else:
        a_surely_faster, b_surely_faster = a_speed[1] < b_speed[0], b_speed[1] < a_speed[0]
    a_surely_faster = a_surely_faster and _trusted(a_measured)
    b_surely_faster = b_surely_faster and _trusted(b_measured)
    if b_surely_faster:
        return False
    a_size, b_size = _value(a, "size_bytes"), _value(b, "size_bytes")
    if a_size > b_size:
        return False
    more_accurate = False
    if accuracy:
        a_acc, b_acc = _value(a, accuracy), _value(b, accuracy)
        if accuracy == "mse":
            a_acc, b_acc = -a_acc, -b_acc
        if a_acc < b_acc:
            return False
        more_accurate = a_acc > b_acc
    return a_surely_faster or more_accurate or a_size < b_size


def _bounds(measured: Measured) -> tuple[float, float]:
    if measured.interval is None:
        return measured.value, measured.value
    low, high = measured.interval
    return min(low, measured.value), max(high, measured.value)


def surely_better(
    a: Measured,
    b: Measured,
    objective: Objective,
    tolerance: float = 0.0,
    *,
    absolute: bool = False,
) -> bool:
    """Return whether ``a`` is surely better than ``b`` on the objective, beyond ``tolerance``.

    The whole interval of ``a`` lies past the better end of ``b``'s, by more than the tolerance (a
    fraction of that end, or, with ``absolute``, in the metric's units). An unbounded interval
    is never surely beaten and never surely beats; a point is its own interval. A measurement
    flagged too noisy to judge never surely beats another: on a disturbed machine its interval
    can lie anywhere (a 703x speedup of a digits CNN whose reference was descheduled).
    """
    if not _trusted(a):
        return False
    a_low, a_high = _bounds(a)
    b_low, b_high = _bounds(b)
    if objective.higher_is_better:
        limit = b_high + tolerance if absolute else b_high * (1 + tolerance)
        return a_low > limit
    limit = b_low - tolerance if absolute else b_low * (1 - tolerance)
    return a_high < limit
