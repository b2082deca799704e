"""The candidates of a choice: one per measured variant, and the fp32 reference always among them.

A candidate is made from a results record (``--modelopt-json``, ``VariantContract.to_dict()``);
where the run did not measure ``eager`` on its own, the reference is synthesized from what the
variants' records say of it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_modelopt.budget import METRICS, Check, Measured, Metric, Verdict
from pytest_modelopt.reference import REFERENCE

# Constraints on what a later step of a chain can only make worse: a variant that breaks one of
# these is not chained further (``Evaluator.best``).
QUALITY_METRICS = frozenset(
    {
        "accuracy",
        "accuracy_drop",
        "relative_accuracy_drop",
        "top1_agreement",
        "max_abs_error",
        "mse",
        "mse_increase",
        "relative_mse_increase",
    }
)


@dataclass
class Candidate:
    """One measured variant: its metrics, its constraint checks and where the choice put it."""

    label: str
    technique: str
    metrics: dict[str, Measured]
    test: str | None = None
    synthesized: bool = False
    checks: list[Check] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rank: int | None = None
    tied: bool = False
    # tied for best only by the width of its own interval: its median is short of the level the
    # best measurement guarantees (a 1.02x [0.77x, 28.1x] beside a 4.5x [3.1x, 6.5x])
    tied_by_width: bool = False
    pareto: bool = False
    recommended: bool = False

    @property
    def steps(self) -> int:
        """How many transformations make this variant: 0 for the reference, one per chain part."""
        return 0 if self.technique == REFERENCE else len(self.technique.split("+"))

    @property
    def feasible(self) -> bool:
        """Return whether the candidate was measured on every constraint and passes them all."""
        return not self.missing and all(c.verdict is Verdict.PASS for c in self.checks)

    @property
    def broken(self) -> list[Check]:
        """Return the constraints the candidate surely fails."""
        return [c for c in self.checks if c.verdict is Verdict.FAIL]

    @property
    def undecided(self) -> list[Check]:
        """Return the constraints the measurements cannot decide for the candidate."""
        return [c for c in self.checks if c.verdict is Verdict.INCONCLUSIVE]

    def breaks_quality(self) -> bool:
        """Whether a quality constraint (accuracy, agreement, error) surely fails."""
        return any(c.budget.metric.name in QUALITY_METRICS for c in self.broken)

    def why_excluded(self) -> str:
        """Say why the candidate is not feasible: broken, undecided and unmeasured constraints."""
        reasons = [
            f"{c.budget.metric.name} {_show(c.budget.metric, c.measured)} breaks {c.budget}"
            for c in self.broken
        ]
        reasons += [
            f"{c.budget.metric.name} undecided against {c.budget}: {c.reason}"
            for c in self.undecided
        ]
        reasons += self.missing
        return "; ".join(reasons)

    def to_dict(self) -> dict[str, Any]:
        """Return the candidate, its place in the choice and its metrics as JSON-ready values."""
        return {
            "label": self.label,
            "technique": self.technique,
            "test": self.test,
            "synthesized": self.synthesized,
            "feasible": self.feasible,
            "rank": self.rank,
            "tied": self.tied,
            "pareto": self.pareto,
            "recommended": self.recommended,
            "excluded": None if self.feasible else self.why_excluded(),
            "metrics": {
                name: {
                    "value": _finite(m.value),
                    "interval": [_finite(side) for side in m.interval] if m.interval else None,
                    "undecidable": m.undecidable,
                }
                for name, m in sorted(self.metrics.items())
            },
            "checks": [
                {"budget": f"{c.budget.metric.name} {c.budget}", "verdict": c.verdict.value}
                for c in self.checks
            ],
        }


def _candidates(records: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    techniques = [str(record["technique"]) for record in records]
    candidates = []
    for record, technique in zip(records, techniques, strict=True):
        label = technique
        if techniques.count(technique) > 1:
            label = f"{technique} ({record.get('test', '?')})"
        candidates.append(Candidate(label, technique, _metrics(record), test=record.get("test")))
    if REFERENCE not in techniques:
        candidates.append(_reference(records))
    return candidates


def _metrics(record: Mapping[str, Any]) -> dict[str, Measured]:
    """Return a record's metrics as Measured values.

    An unbounded interval side (JSON null) is infinite, so that it decides nothing.
    """
    metrics = {}
    for name, entry in record.get("metrics", {}).items():
        if name not in METRICS or not isinstance(entry, Mapping):
            continue
        value = entry.get("value")
        if value is None or not math.isfinite(value):  # as a results file stores it: null
            continue
        interval = entry.get("interval")
        if interval is not None:
            low, high = interval
            interval = (
                -math.inf if low is None else float(low),
                math.inf if high is None else float(high),
            )
        metrics[name] = Measured(float(value), interval, entry.get("undecidable"))
    return metrics


def _reference(records: Sequence[Mapping[str, Any]]) -> Candidate:
    """Make the fp32 reference a candidate, from what the variants' records say of it.

    Exactly 1x of itself, no drop, no error, its own size and accuracy, its median latency.
    """
    sizes = records[0]["sizes"]
    metrics = {
        "speedup": Measured(1.0, (1.0, 1.0)),
        "instructions_ratio": Measured(1.0, (1.0, 1.0)),
        "cycles_ratio": Measured(1.0),
        "size_bytes": Measured(float(sizes["reference_bytes"])),
        "size_ratio": Measured(1.0),
        "gzip_size_ratio": Measured(1.0),
        "max_abs_error": Measured(0.0),
    }
    accuracy = [record.get("accuracy", {}) for record in records]
    if all("top1_agreement" in a for a in accuracy):
        metrics["top1_agreement"] = Measured(1.0)
    for name, zero in (
        ("reference_accuracy", ("accuracy_drop", "relative_accuracy_drop")),
        ("reference_mse", ("mse_increase", "relative_mse_increase")),
    ):
        values = [a[name] for a in accuracy if name in a]
        if len(values) == len(accuracy):
            metrics[name.removeprefix("reference_")] = Measured(float(statistics.median(values)))
            metrics.update({metric: Measured(0.0) for metric in zero})
    wall = [r for r in records if "latency_p50_ms" in r.get("metrics", {})]
    if wall:
        p50s = [float(r["latency"]["reference"]["stats"]["p50"]) * 1e3 for r in wall]
        p50 = statistics.median(p50s)
        metrics["latency_p50_ms"] = Measured(p50)
        batches = [
            r["metrics"]["throughput"]["value"] * r["metrics"]["latency_p50_ms"]["value"] / 1e3
            for r in wall
            if r["metrics"].get("throughput", {}).get("value") is not None
        ]
        if batches:
            metrics["throughput"] = Measured(round(statistics.median(batches)) / (p50 / 1e3))
    return Candidate(f"{REFERENCE} (reference)", REFERENCE, metrics, synthesized=True)


def _value(candidate: Candidate, name: str) -> float:
    measured = candidate.metrics.get(name)
    return measured.value if measured is not None else math.nan


def _finite(value: float) -> float | None:
    """JSON has no infinity: an unbounded interval side is written as null."""
    return value if math.isfinite(value) else None


def _show(metric: Metric, measured: Measured) -> str:
    return "-" if math.isnan(measured.value) else metric.format_measured(measured)
