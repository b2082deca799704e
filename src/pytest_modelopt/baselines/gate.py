"""The regression gate: a new entry compared with the stored one, and the table of the comparison.

Regression rules (each a :class:`~pytest_modelopt.budget.Budget` judged by the engine's
``judge``, so an interval decides and INCONCLUSIVE exists):

- ``speedup``: the new interval against ``stored speedup * (1 - speedup_tolerance)``: FAIL only
  when the whole interval lies below it. A stored speedup the engine found too noisy to judge,
  or left unbounded, sets no limit.
- ``latency_p50_ms``: only with a latency tolerance (off by default) and only when the detected
  hardware matches the stored one, the new interval against ``stored p50 * (1 + tolerance)``.
- ``size_bytes``: at most ``stored * (1 + size_tolerance)``.
- ``accuracy`` and ``top1_agreement``: at least ``stored - accuracy_tolerance`` (points).
- Counted entries (the instructions meter, kept under ``<fingerprint>-counted``): in place of
  speedup and latency, the variant's ``instructions_per_call`` at most
  ``stored * (1 + instructions_tolerance)``; counts barely move between processes, so the default
  tolerance is 1%. The instructions ratio is stored, not gated: its denominator, the reference's
  count, moves with what else the worker imported, and on tiny models its interval over the
  rounds is as wide as the gate.

A stored speedup or p50 whose interval reaches further from its value than the tolerance is
imprecise: its own uncertainty could fail a run that did not regress, or pass one that did. Its
check still gates, and carries a ``caveat`` that says so and how to record it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_modelopt.baselines.entries import BaselineEntry, _interval
from pytest_modelopt.baselines.tolerances import Tolerances
from pytest_modelopt.budget import METRICS, Budget, Check, Measured, Verdict, judge
from pytest_modelopt.readable import table_lines

ACCURACY_METRICS = ("accuracy", "top1_agreement")


@dataclass(frozen=True)
class BaselineCheck:
    """One metric of a test compared with its baseline."""

    check: Check
    baseline: Measured
    caveat: str = ""  # why the stored figure cannot be trusted to the tolerance, if it cannot

    @property
    def verdict(self) -> Verdict:
        """Return the comparison's verdict."""
        return self.check.verdict

    @property
    def metric(self) -> str:
        """Return the name of the metric compared."""
        return self.check.budget.metric.name

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as the results JSON records it: both values, limit, verdict."""
        return {
            "metric": self.metric,
            "baseline": self.baseline.value,
            "baseline_interval": _interval(self.baseline.interval),
            "measured": self.check.measured.value,
            "interval": _interval(self.check.measured.interval),
            "limit": str(self.check.budget),
            "verdict": self.verdict.value,
            "reason": self.check.reason,
            "caveat": self.caveat,
        }


def imprecision(stored: Measured, tolerance: float, metric: str) -> str:
    """Say why a stored figure cannot gate at ``tolerance``: its interval reaches further.

    Empty when the interval lies within the tolerance of the value (or there is none).
    """
    if stored.interval is None or not stored.value:
        return ""
    low, high = stored.interval
    reach = max(stored.value - low, high - stored.value) / abs(stored.value)
    if reach <= tolerance:
        return ""
    shown = METRICS[metric].format_measured(stored)
    return (
        f"the stored {shown} reaches {reach:.0%} from its value, beyond the {tolerance:.0%} "
        "tolerance: recorded under noise, it can fail a run that did not regress or pass one "
        "that did; record it again on a quiet machine (--modelopt-save-baseline)"
    )


def compare(
    stored: BaselineEntry,
    new: BaselineEntry,
    tolerances: Tolerances,
    *,
    same_hardware: bool,
) -> list[BaselineCheck]:
    """Check a new entry against a stored one for regressions (see the module docstring)."""
    checks = []

    def add(
        metric: str,
        op: str,
        threshold: float,
        old: Measured,
        measured: Measured,
        tolerance: float | None = None,
    ) -> None:
        budget = Budget(METRICS[metric], op, threshold)
        caveat = "" if tolerance is None else imprecision(old, tolerance, metric)
        checks.append(BaselineCheck(judge(budget, measured), old, caveat))

    if stored.speedup is not None and new.speedup is not None and stored.speedup.can_gate:
        old_speedup = stored.speedup.measured(keep_reason=False)
        add(
            "speedup",
            ">=",
            old_speedup.value * (1 - tolerances.speedup),
            old_speedup,
            new.speedup.measured(keep_reason=True),
            tolerances.speedup,
        )
    if stored.instructions_per_call is not None and new.instructions_per_call is not None:
        old_count = Measured(stored.instructions_per_call.value)
        add(
            "instructions_per_call",
            "<=",
            old_count.value * (1 + tolerances.instructions),
            old_count,
            Measured(new.instructions_per_call.value),
        )
    if (
        tolerances.latency is not None
        and same_hardware
        and stored.latency_p50_ms is not None
        and new.latency_p50_ms is not None
    ):
        old_p50 = stored.latency_p50_ms.measured(keep_reason=False)
        add(
            "latency_p50_ms",
            "<=",
            old_p50.value * (1 + tolerances.latency),
            old_p50,
            new.latency_p50_ms.measured(keep_reason=True),
            tolerances.latency,
        )
    add(
        "size_bytes",
        "<=",
        stored.size_bytes * (1 + tolerances.size),
        Measured(stored.size_bytes),
        Measured(new.size_bytes),
    )
    for metric in ACCURACY_METRICS:
        if metric in stored.accuracy and metric in new.accuracy:
            old = stored.accuracy[metric]
            add(
                metric,
                ">=",
                old - tolerances.accuracy,
                Measured(old),
                Measured(new.accuracy[metric]),
            )
    return checks


def format_baseline_checks(checks: Iterable[BaselineCheck], title: str) -> str:
    """Tabulate metric, baseline [interval], measured [interval], limit, verdict; then reasons."""
    rows = [("metric", "baseline", "measured", "limit", "verdict")]
    reasons = []
    for item in checks:
        metric = item.check.budget.metric
        rows.append(
            (
                metric.name,
                metric.format_measured(item.baseline),
                metric.format_measured(item.check.measured),
                str(item.check.budget),
                item.verdict.value,
            )
        )
        if item.check.reason:
            reasons.append(f"  {metric.name}: {item.verdict.value.lower()}: {item.check.reason}")
        if item.caveat:
            reasons.append(f"  {metric.name}: imprecise baseline: {item.caveat}")
    return "\n".join([title, *table_lines(rows), *reasons])
