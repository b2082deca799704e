"""Budgets: the vocabulary of a contract, and the verdicts PASS, FAIL and INCONCLUSIVE.

A budget is a metric, a direction and a threshold: ``speedup=">=1.8"``, ``size_ratio=0.3`` (the
metric's natural direction), ``top1_agreement="99%"``. A measured value may carry a confidence
interval; then the verdict is FAIL only when the whole interval breaks the budget, PASS only when
the whole interval keeps it, and INCONCLUSIVE when the budget lies inside the interval or the data
was too noisy to judge. Inconclusive is never reported as a regression.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_modelopt.errors import BudgetError

# What an inconclusive verdict does after one more measurement: fail the test, or pass and report.
INCONCLUSIVE_POLICIES = ("fail", "report")


class Verdict(str, enum.Enum):
    """A budget's verdict: kept, broken, or not decided by the measurements."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


@dataclass(frozen=True)
class Metric:
    """What a budget can limit: its name, its better direction, its unit and what it means."""

    name: str
    higher_is_better: bool
    unit: str
    description: str

    def format(self, value: float) -> str:
        """Return ``value`` as a table shows it, in the metric's unit (a fraction as a percent)."""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if self.unit == "x":
            return f"{value:.3g}x"
        if self.unit == "%":
            return f"{value * 100:.2f}%"
        if self.unit == "B":
            return f"{value:,.0f} B"
        if self.unit in {"Ir", "cycles"}:
            return f"{value:,.0f} {self.unit}"
        return f"{value:.4g}{(' ' + self.unit) if self.unit else ''}"

    def format_measured(self, measured: Measured) -> str:
        """Return a measured value as a table shows it, its interval after it when it has one."""
        text = self.format(measured.value)
        if measured.interval is not None:
            low, high = measured.interval
            text += f" [{self.format(low)}, {self.format(high)}]"
        return text


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "speedup", True, "x", "reference latency / variant latency, median of paired rounds"
        ),
        Metric("latency_p50_ms", False, "ms", "median latency of one call"),
        Metric("latency_p90_ms", False, "ms", "90th percentile latency (needs >= 64 samples)"),
        Metric("latency_p99_ms", False, "ms", "99th percentile latency (needs >= 662 samples)"),
        Metric("throughput", True, "items/s", "batch size / median latency"),
        Metric("size_bytes", False, "B", "bytes on disk of every file of the variant"),
        Metric("size_ratio", False, "x", "variant bytes / reference bytes"),
        Metric("gzip_size_ratio", False, "x", "gzip bytes of the variant / of the reference"),
        Metric("accuracy", True, "%", "task metric on labelled eval data (top-1)"),
        Metric("accuracy_drop", False, "%", "reference accuracy - variant accuracy, in points"),
        Metric("relative_accuracy_drop", False, "%", "accuracy_drop / reference accuracy"),
        Metric("top1_agreement", True, "%", "share of eval items where top-1 matches reference"),
        Metric("max_abs_error", False, "", "largest absolute output difference from reference"),
        Metric("mse", False, "", "mean squared error of a one-output regressor on its targets"),
        Metric("mse_increase", False, "", "variant MSE - reference MSE"),
        Metric("relative_mse_increase", False, "%", "mse_increase / reference MSE"),
        Metric("peak_memory_mb", False, "MB", "host memory a first call adds at its peak"),
        Metric(
            "instructions_ratio",
            True,
            "x",
            "reference instructions / variant instructions per call, counted under valgrind",
        ),
        Metric("instructions_per_call", False, "Ir", "instructions of one variant call (valgrind)"),
        Metric(
            "estimated_cycles",
            False,
            "cycles",
            "cycles of one variant call estimated from simulated cache misses (valgrind)",
        ),
        Metric("cycles_ratio", True, "x", "reference estimated cycles / variant estimated cycles"),
    )
}
# The meters a variant can be measured with (measure.py, counting.py), and what each measures:
# a budget on the other meter's metrics is reported, not judged.
METERS = ("wall", "instructions")
METER_METRICS = {
    "wall": frozenset(
        {"speedup", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput"}
    ),
    "instructions": frozenset(
        {"instructions_ratio", "instructions_per_call", "estimated_cycles", "cycles_ratio"}
    ),
}

_BUDGET = re.compile(r"^\s*(>=|<=|>|<)?\s*([-+]?[0-9.]+(?:e[-+]?\d+)?)\s*(%|x|ms)?\s*$", re.I)


@dataclass(frozen=True)
class Budget:
    """A limit on a metric: the measured value must be ``op`` (``>=`` or ``<=``) ``threshold``."""

    metric: Metric
    op: str  # ">=" or "<="
    threshold: float

    @classmethod
    def parse(cls, metric: str, spec: float | str) -> Budget:
        """Read ``">=1.8"``, ``"<= 0.3"``, ``"99%"``, ``"1.8x"`` or a bare number."""
        if metric not in METRICS:
            known = ", ".join(METRICS)
            raise BudgetError(f"unknown budget metric {metric!r}; known metrics: {known}")
        meta = METRICS[metric]
        if isinstance(spec, bool) or not isinstance(spec, int | float | str):
            raise BudgetError(f"budget {metric}={spec!r}: give a number or a string like '>=1.2'")
        match = _BUDGET.match(str(spec))
        if match is None:
            raise BudgetError(f"budget {metric}={spec!r} is not a number with an optional >= or <=")
        op, number, suffix = match.groups()
        threshold = float(number) / (100 if suffix == "%" else 1)
        natural = ">=" if meta.higher_is_better else "<="
        op = {">": ">=", "<": "<="}.get(op or natural, op or natural)
        return cls(meta, op, threshold)

    def holds(self, value: float) -> bool:
        """Return whether ``value`` keeps the budget."""
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def __str__(self) -> str:
        return f"{self.op} {self.metric.format(self.threshold)}"


@dataclass(frozen=True)
class Measured:
    """A measured value, with its confidence interval when it has one.

    ``undecidable`` gives the reason when the value must not decide a verdict (too noisy, too few
    samples for a percentile).
    """

    value: float
    interval: tuple[float, float] | None = None
    undecidable: str | None = None


@dataclass(frozen=True)
class Check:
    """A budget judged against a measured value: its verdict, and why when it is not clear."""

    budget: Budget
    measured: Measured
    verdict: Verdict
    reason: str = ""


def judge(budget: Budget, measured: Measured) -> Check:
    """Judge one budget: PASS or FAIL only when the whole confidence interval agrees.

    A value with no interval is judged as it is; an undecidable one, or a budget inside the
    interval, is INCONCLUSIVE with the reason.
    """
    if measured.undecidable:
        return Check(budget, measured, Verdict.INCONCLUSIVE, measured.undecidable)
    if measured.interval is None:
        verdict = Verdict.PASS if budget.holds(measured.value) else Verdict.FAIL
        return Check(budget, measured, verdict)
    low, high = measured.interval
    if budget.holds(low) and budget.holds(high):
        return Check(budget, measured, Verdict.PASS)
    if not budget.holds(low) and not budget.holds(high):
        return Check(budget, measured, Verdict.FAIL)
    return Check(
        budget,
        measured,
        Verdict.INCONCLUSIVE,
        f"the budget lies inside the interval [{budget.metric.format(low)}, "
        f"{budget.metric.format(high)}]",
    )


def judge_all(budgets: Mapping[str, float | str], metrics: Mapping[str, Measured]) -> list[Check]:
    """Parse and judge every budget against the measured metrics, in the budgets' order.

    A budget that cannot be read, or on a metric that was not measured, is a BudgetError that
    says what it needs.
    """
    parsed = [Budget.parse(name, spec) for name, spec in budgets.items()]
    checks = []
    for budget in parsed:
        if budget.metric.name not in metrics:
            raise BudgetError(_unavailable(budget.metric.name))
        checks.append(judge(budget, metrics[budget.metric.name]))
    return checks


def _unavailable(metric: str) -> str:
    if metric in {"accuracy", "accuracy_drop", "relative_accuracy_drop"}:
        return (
            f"budget {metric} needs labelled eval data: give the ModelSpec eval_data as "
            "(inputs, labels) pairs, or budget top1_agreement instead"
        )
    if metric in {"mse", "mse_increase", "relative_mse_increase"}:
        return (
            f"budget {metric} needs a one-output regressor and labelled eval data: give the "
            "ModelSpec eval_data as (inputs, targets) pairs"
        )
    if metric == "top1_agreement":
        return "budget top1_agreement needs classifier outputs (one score per class)"
    return f"metric {metric} was not measured for this variant"


def format_checks(checks: Iterable[Check], title: str = "") -> str:
    """One readable table: metric, measured, interval, budget, verdict (and why, if not clear)."""
    rows = [("metric", "measured", "interval", "budget", "verdict")]
    reasons = []
    for check in checks:
        metric = check.budget.metric
        interval = check.measured.interval
        shown = f"[{metric.format(interval[0])}, {metric.format(interval[1])}]" if interval else ""
        rows.append(
            (
                metric.name,
                metric.format(check.measured.value),
                shown,
                str(check.budget),
                check.verdict.value,
            )
        )
        if check.reason:
            reasons.append(f"  {metric.name}: {check.verdict.value.lower()}: {check.reason}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title] if title else []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines + reasons)


# Beyond this factor more timing is not worth suggesting: the value sits on the budget.
_MAX_USEFUL_TIME_FACTOR = 30.0


LOOSEN_BUDGET = "set the budget further from the measured value"
LOOSEN_TOLERANCE = (
    "raise the tolerance (modelopt_baseline(speedup_tolerance=...) on the test, or "
    "--modelopt-speedup-tolerance)"
)


# What to do about a decided failure: more timing cannot change it.
AFTER_BROKEN_BUDGET = (
    "what to do: the measurements decide it, so more timing will not change the verdict: fix "
    "the variant, or, if this hardware cannot do better, set the budget to what it can meet"
)
AFTER_REGRESSION = (
    "what to do: if the change is intended, record the new figures with "
    "--modelopt-save-baseline; if not, the variant regressed (a table of what grew follows "
    "where the meter can tell)"
)


def what_to_do(undecided: Iterable[Check], timed_s: float, loosen: str = LOOSEN_BUDGET) -> str:
    """Say how to turn inconclusive verdicts into decisions, with the timing likely to decide each.

    ``loosen`` says how to move the limit (a contract's budget, a baseline's tolerance).

    An interval narrows about as one over the square root of the rounds, so the budget leaves it
    once the rounds grow by (half-width / distance to the budget)^2, on the log scale of ratios.
    """
    lines = ["what to do:"]
    for check in undecided:
        lines.append(f"  - {check.budget.metric.name}: {_advice(check, timed_s, loosen)}")
    lines.append(
        "  - or report instead of failing: --modelopt-inconclusive=report "
        "(ini modelopt_inconclusive = report)"
    )
    return "\n".join(lines)


def _advice(check: Check, timed_s: float, loosen: str) -> str:
    reason = check.measured.undecidable or ""
    if reason.startswith("too noisy"):
        return (
            "the rounds disagree too much for more time to help: run on a quieter machine (no "
            "other jobs, fewer xdist workers), or raise --modelopt-noise"
        )
    if "samples" in reason:
        return f"a percentile needs more samples: {_more_time(4 * timed_s)}"
    if _unbounded_side(check):
        return (
            f"{timed_s:.1f} s gave too few rounds for a bounded interval: "
            f"{_more_time(4 * timed_s)}; or {loosen}"
        )
    factor = _time_factor(check)
    if factor is None or factor > _MAX_USEFUL_TIME_FACTOR:
        return (
            f"the measured {check.budget.metric.format(check.measured.value)} lies on the budget "
            f"({check.budget}): more timing will not settle it; {loosen}"
        )
    seconds = timed_s * factor * 1.2  # 20% over the estimate: rounds vary in length
    return (
        f"about {seconds:.0f} s of timing would likely decide it ({timed_s:.1f} s were spent): "
        f"{_more_time(seconds)}; or {loosen}"
    )


def _more_time(seconds: float) -> str:
    cap = max(1, math.ceil(seconds))
    return (
        f"max_time={cap} on the modelopt marker, --modelopt-max-time {cap} "
        "(MeasureSettings(max_time=...) in Python)"
    )


def _unbounded_side(check: Check) -> bool:
    """Whether the interval is open on the side where the budget lies (too few rounds)."""
    if check.measured.interval is None:
        return False
    low, high = check.measured.interval
    side = low if check.budget.threshold < check.measured.value else high
    return not 0 < side < math.inf


def _time_factor(check: Check) -> float | None:
    """How many times the rounds so far would likely move the interval off the budget."""
    value, threshold = check.measured.value, check.budget.threshold
    if check.measured.interval is None or min(value, threshold) <= 0:
        return None
    low, high = check.measured.interval
    side = low if threshold < value else high
    distance = abs(math.log(value / threshold))
    if distance < 1e-9:
        return None
    return (math.log(value / side) / distance) ** 2
