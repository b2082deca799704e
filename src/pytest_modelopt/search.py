"""Which variant should I ship on this machine? Choose among measured variants under budgets.

    choice = choose(records, ["accuracy_drop<=1%", "size_ratio<=0.5"], objective="latency")
    print(choice.table())          # ranked, Pareto front, ties, the recommendation, exclusions

``records`` are the per-variant dicts of a results JSON (``--modelopt-json``) or
``VariantResult.to_dict()``, all of one model on one machine. The rules, in order:

1. **Constraints.** Each budget (the budget syntax of ``expect``: ``"accuracy_drop<=1%"``,
   ``"size_ratio<=0.5"``) is judged on each candidate as ``expect`` judges it. A candidate is
   *feasible* when every constraint PASSes; one that FAILs is excluded with the measured value
   and the budget it breaks; one that is INCONCLUSIVE (the budget inside its interval, too noisy)
   or did not measure the metric is excluded as *undecided*, with the reason.
2. **Objective.** ``latency`` ranks by the speedup against the fp32 reference (paired,
   interleaved rounds, with an interval: absolute latencies drift between the minutes that
   separate two variants' measurements, the paired ratio does not), or by the instructions
   ratio in a counted run; ``throughput`` by items per second at the spec's batch (absolute,
   interval of the median latency); ``size`` by bytes on disk (exact). Any metric name is also
   accepted as an objective.
3. **Ties.** The interval of a candidate's objective decides, not its median: a feasible
   candidate is *tied for best* when no other feasible candidate is surely better than it,
   i.e. when the better end of its interval reaches the highest lower end (for a
   higher-is-better objective) among the feasible candidates. The candidate best by median is
   always tied for best; all tied candidates share rank 1 (``=1``), the others are ranked by
   median from ``len(tied) + 1``. A candidate without an interval (size, a synthesized
   reference) is a point.
4. **Recommendation.** Among the tied, the first by: a measurement that can decide (its
   objective not flagged too noisy to judge, its interval bounded), fewer steps (the fp32
   reference 0, a technique 1, a chain one per part: a step that buys nothing measurable is
   not worth shipping), smaller on disk, more accurate, then the better median. The output
   says when the recommendation is a tie, and with which.
5. **Pareto front** over (speed, accuracy, size) among the feasible candidates, ties respected:
   A dominates B when B is not surely faster than A, A is at least as accurate and at most as
   large, and A is better on one of them (surely faster, more accurate, or smaller). The front
   is the feasible candidates nobody dominates. "Surely faster" is interval-disjoint, as above.

The fp32 reference is always a candidate: its own record where the run measured ``eager``, else
one made from the variants' records (speedup exactly 1, no drop, the reference's size and
accuracy), so that "no variant is measurably better than fp32" can be the answer.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_modelopt.budget import METRICS, Budget, Check, Measured, Metric, Verdict, judge
from pytest_modelopt.errors import BudgetError, InvalidFileError

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_modelopt.evaluation import Evaluator, VariantResult
    from pytest_modelopt.hardware import Hardware
    from pytest_modelopt.results import RecordedSearch, Run

REFERENCE = "eager"
# What each objective ranks by; a counted run (the instructions meter) has no wall clock.
OBJECTIVES = {"latency": "speedup", "throughput": "throughput", "size": "size_bytes"}
COUNTED_OBJECTIVES = {"latency": "instructions_ratio", "throughput": "instructions_ratio"}
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

_CONSTRAINT = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<|=)?\s*(.*)$", re.I)


def parse_constraint(text: str) -> tuple[str, Budget]:
    """Parse ``"accuracy_drop<=1%"`` into the metric name and its Budget.

    ``"accuracy_drop=1%"`` takes the metric's natural direction; a bad metric or threshold is a
    BudgetError naming it.
    """
    match = _CONSTRAINT.match(text)
    if match is None or not match.group(3).strip():
        raise BudgetError(
            f"budget {text!r}: write a metric, an optional <= or >=, and a threshold, e.g. "
            "'accuracy_drop<=1%' or 'size_ratio<=0.5'"
        )
    name, op, threshold = match.groups()
    spec = threshold if op in (None, "=") else f"{op}{threshold}"
    if name not in METRICS:
        return name, Budget.parse(name, spec)  # the error lists the known metrics
    try:
        return name, Budget.parse(name, spec)
    except BudgetError:
        raise BudgetError(
            f"budget {text!r}: {threshold.strip()!r} is not a number (with an optional %, x or "
            "ms), e.g. 'accuracy_drop<=1%' or 'size_ratio<=0.5'"
        ) from None


def parse_budgets(budgets: Iterable[str] | Mapping[str, float | str] | None) -> list[Budget]:
    """Parse budgets given as a mapping or as strings; one metric given twice is an error.

    ``{"accuracy_drop": "<=1%"}`` (``expect``'s keywords) or ``["accuracy_drop<=1%"]`` (the
    command line's).
    """
    if budgets is None:
        return []
    if isinstance(budgets, str):
        budgets = [budgets]
    if isinstance(budgets, Mapping):
        parsed = [(name, Budget.parse(name, spec)) for name, spec in budgets.items()]
    else:
        parsed = [parse_constraint(text) for text in budgets]
    names = [name for name, _ in parsed]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise BudgetError(f"budget on {', '.join(twice)} given twice: give each metric once")
    return [budget for _, budget in parsed]


@dataclass(frozen=True)
class Objective:
    """What the ranking optimizes: ``name`` as asked, ``metric`` what is compared."""

    name: str
    metric: Metric

    @property
    def higher_is_better(self) -> bool:
        """Return whether a higher value of the compared metric is better."""
        return self.metric.higher_is_better

    def describe(self) -> str:
        """Name the objective and its metric, and which way is better."""
        better = "higher" if self.higher_is_better else "lower"
        if self.name == self.metric.name:
            return f"{self.name} ({better} is better)"
        return f"{self.name}: {self.metric.name} ({better} is better)"


def parse_objective(name: str, *, counted: bool = False) -> Objective:
    """Parse the objective ``latency``, ``throughput``, ``size`` or a metric name.

    ``counted`` says the records come from the instructions meter.
    """
    table = {**OBJECTIVES, **COUNTED_OBJECTIVES} if counted else OBJECTIVES
    metric = table.get(name, name)
    if metric not in METRICS:
        raise BudgetError(
            f"unknown objective {name!r}: choose latency, throughput or size, or a metric: "
            f"{', '.join(METRICS)}"
        )
    return Objective(name, METRICS[metric])


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


@dataclass
class Choice:
    """The answer for one model on one machine.

    Ranked feasible candidates, the Pareto front, the recommendation, and why the others were
    excluded.
    """

    spec: str
    fingerprint: str | None
    objective: Objective
    budgets: list[Budget]
    candidates: list[Candidate]  # every candidate: feasible first, ranked, then excluded
    accuracy_axis: str | None
    search: str | None = None  # the test of the search whose candidates these are, if one's
    note: str | None = None  # how this answer differs from the one the search gave in session

    @property
    def ranked(self) -> list[Candidate]:
        """Return the feasible candidates, in rank order."""
        return [c for c in self.candidates if c.feasible]

    @property
    def excluded(self) -> list[Candidate]:
        """Return the candidates that are not feasible."""
        return [c for c in self.candidates if not c.feasible]

    @property
    def tied(self) -> list[Candidate]:
        """Return the candidates tied for best."""
        return [c for c in self.ranked if c.tied]

    @property
    def front(self) -> list[Candidate]:
        """Return the feasible candidates on the Pareto front."""
        return [c for c in self.ranked if c.pareto]

    @property
    def recommended(self) -> Candidate | None:
        """Return the recommended candidate, or None when no candidate is feasible."""
        return next((c for c in self.ranked if c.recommended), None)

    def by_label(self, label: str) -> Candidate:
        """Return the candidate labelled ``label``."""
        return next(c for c in self.candidates if c.label == label)

    def surely_better_than(
        self, candidate: Candidate, tolerance: float = 0.0, *, absolute: bool = False
    ) -> list[Candidate]:
        """Return the feasible candidates whose objective is surely better than ``candidate``'s.

        Better beyond ``tolerance`` (see ``surely_better``). Empty for the recommendation: the
        issue's acceptance rule, which the marker checks.
        """
        return [
            other
            for other in self.ranked
            if other is not candidate
            and surely_better(
                self._value(other),
                self._value(candidate),
                self.objective,
                tolerance,
                absolute=absolute,
            )
        ]

    def title(self) -> str:
        """Return the table's title: model, machine, search, objective and constraints."""
        where = f" on {self.fingerprint}" if self.fingerprint else ""
        if self.search:
            where += f" (search {self.search})"
        budgets = ", ".join(f"{b.metric.name} {b}" for b in self.budgets) or "none"
        return f"{self.spec}{where}: objective {self.objective.describe()}; constraints: {budgets}"

    def verdict(self) -> str:
        """One sentence: what to ship, and whether it is a tie."""
        best = self.recommended
        if best is None:
            return (
                f"no candidate of {self.spec} meets every constraint "
                f"({len(self.candidates)} measured): see the exclusions"
            )
        metric = self.objective.metric
        text = f"recommended: {best.label}, {metric.name} {_show(metric, self._value(best))}"
        others = [c.label for c in self.tied if c is not best]
        if others:
            text += (
                f"; a tie within the intervals with {', '.join(others)} (none is surely "
                f"{'better' if metric.higher_is_better else 'lower'}): chosen for "
                f"{self._why_chosen(best)}"
            )
        noisy = self._value(best).undecidable
        if noisy:
            text += f"; note: {noisy}"
        return text

    def _why_chosen(self, best: Candidate) -> str:
        """Name the first tie-break that separates the recommendation from the next tied one."""
        others = [c for c in self.tied if c is not best]
        reasons = []
        if any(not _trusted(self._value(c)) for c in others) and _trusted(self._value(best)):
            reasons.append("a measurement that can decide (bounded, not too noisy)")
        if any(c.steps > best.steps for c in others):
            reasons.append(
                "being the fp32 reference" if best.steps == 0 else "fewer steps than a chain"
            )
        size = _value(best, "size_bytes")
        if any(_value(c, "size_bytes") > size for c in others if c.steps == best.steps):
            reasons.append("a smaller size")
        return ", then ".join(reasons) or "the better median"

    def _value(self, candidate: Candidate) -> Measured:
        return candidate.metrics.get(self.objective.metric.name, Measured(math.nan))

    def table(self) -> str:
        """Format the ranked table, the verdict sentence and the exclusions as terminal text."""
        metric = self.objective.metric
        accuracy = self.accuracy_axis
        header = ("rank", "variant", f"{metric.name} [interval]", "p50 ms", "size", "accuracy")
        rows: list[tuple[str, ...]] = [(*header, "constraints", "marks")]
        for candidate in self.ranked:
            rows.append(
                (
                    f"={candidate.rank}" if candidate.tied else str(candidate.rank),
                    candidate.label,
                    _show(metric, self._value(candidate)),
                    _plain(candidate, "latency_p50_ms", "{:.4g}"),
                    _plain(candidate, "size_ratio", "{:.3g}x"),
                    _accuracy_text(candidate, accuracy),
                    "; ".join(
                        f"{c.budget.metric.name} {c.budget.metric.format(c.measured.value)} ok"
                        for c in candidate.checks
                    )
                    or "-",
                    ", ".join(_marks(candidate, self._value(candidate))),
                )
            )
        lines = [self.title(), *_table(rows)] if self.ranked else [self.title()]
        lines.append(self.verdict())
        if self.note:
            lines.append(f"note: {self.note}")
        if self.excluded:
            lines.append("excluded:")
            lines += [f"  {c.label}: {c.why_excluded()}" for c in self.excluded]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the choice and every candidate as JSON-ready values."""
        best = self.recommended
        return {
            "spec": self.spec,
            "fingerprint": self.fingerprint,
            "search": self.search,
            "note": self.note,
            "objective": {"name": self.objective.name, "metric": self.objective.metric.name},
            "budgets": [f"{b.metric.name} {b}" for b in self.budgets],
            "recommended": best.label if best else None,
            "tied": [c.label for c in self.tied],
            "front": [c.label for c in self.front],
            "verdict": self.verdict(),
            "candidates": [c.to_dict() for c in self.candidates],
        }


def choose(
    records: Sequence[Mapping[str, Any]],
    budgets: Iterable[str] | Mapping[str, float | str] | Sequence[Budget] | None = None,
    objective: str = "latency",
    *,
    fingerprint: str | None = None,
) -> Choice:
    """Rank the records of one model on one machine under the budgets (module docstring)."""
    if not records:
        raise ValueError("choose() needs at least one record")
    specs = sorted({str(record["spec"]) for record in records})
    if len(specs) > 1:
        raise ValueError(f"choose() takes the records of one model, got {', '.join(specs)}")
    parsed = _budgets(budgets)
    counted = all(record.get("meter") == "instructions" for record in records)
    chosen = parse_objective(objective, counted=counted)
    candidates = _candidates(records)
    for candidate in candidates:
        for budget in parsed:
            measured = candidate.metrics.get(budget.metric.name)
            if measured is None:
                candidate.missing.append(_unmeasured(budget.metric.name))
            else:
                candidate.checks.append(judge(budget, measured))
        if chosen.metric.name not in candidate.metrics:
            candidate.missing.append(f"objective {_unmeasured(chosen.metric.name)}")
    feasible = [c for c in candidates if c.feasible]
    accuracy = next(
        (name for name in ACCURACY_AXES if all(name in c.metrics for c in candidates)), None
    )
    _rank(feasible, chosen, accuracy)
    speed = chosen.metric
    if speed.name not in SPEED_METRICS:  # objective size: the front's speed axis is latency's
        speed = parse_objective("latency", counted=counted).metric
    _mark_front(feasible, speed, accuracy)
    # the recommendation first among the tied, then by median (shown, not ranked)
    ordered = sorted(feasible, key=lambda c: (c.rank or 0, not c.recommended, _order(c, chosen)))
    ordered += sorted((c for c in candidates if not c.feasible), key=lambda c: c.label)
    return Choice(specs[0], fingerprint, chosen, parsed, ordered, accuracy)


def _budgets(
    budgets: Iterable[str] | Mapping[str, float | str] | Sequence[Budget] | None,
) -> list[Budget]:
    if budgets is None:
        return []
    if isinstance(budgets, Mapping | str):
        return parse_budgets(budgets)
    items = list(budgets)
    if all(isinstance(item, Budget) for item in items):
        return [item for item in items if isinstance(item, Budget)]
    return parse_budgets([str(item) for item in items])


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


def _rank(feasible: list[Candidate], objective: Objective, accuracy: str | None) -> None:
    """Rank the feasible candidates and mark the ties and the recommendation.

    Ties for best share rank 1; the rest are ranked by median; the recommendation is the first
    tied candidate by the tie-breaks (module docstring).
    """
    if not feasible:
        return
    name, higher = objective.metric.name, objective.higher_is_better
    # The best guaranteed level: the highest lower end (the lowest upper end, lower-is-better).
    ends = [_bounds(c.metrics[name]) for c in feasible]
    guaranteed = max(low for low, _ in ends) if higher else min(high for _, high in ends)
    for candidate, (low, high) in zip(feasible, ends, strict=True):
        candidate.tied = high >= guaranteed if higher else low <= guaranteed
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
    a_speed, b_speed = (_bounds(c.metrics.get(speed.name, Measured(math.nan))) for c in (a, b))
    if speed.higher_is_better:
        a_surely_faster, b_surely_faster = a_speed[0] > b_speed[1], b_speed[0] > a_speed[1]
    else:
        a_surely_faster, b_surely_faster = a_speed[1] < b_speed[0], b_speed[1] < a_speed[0]
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


def _value(candidate: Candidate, name: str) -> float:
    measured = candidate.metrics.get(name)
    return measured.value if measured is not None else math.nan


def _json_ready(data: Any) -> Any:
    """JSON has no infinity or NaN: written as null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {key: _json_ready(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_json_ready(value) for value in data]
    return data


def _finite(value: float) -> float | None:
    """JSON has no infinity: an unbounded interval side is written as null."""
    return value if math.isfinite(value) else None


def _unmeasured(metric: str) -> str:
    if metric in {"accuracy", "accuracy_drop", "relative_accuracy_drop"}:
        return f"{metric} not measured: it needs labelled eval data (budget top1_agreement instead)"
    if metric in {"mse", "mse_increase", "relative_mse_increase"}:
        return f"{metric} not measured: it needs a one-output regressor with labelled eval data"
    return f"{metric} not measured for this variant"


def _show(metric: Metric, measured: Measured) -> str:
    if math.isnan(measured.value):
        return "-"
    text = metric.format(measured.value)
    if measured.interval is not None:
        low, high = measured.interval
        text += f" [{metric.format(low)}, {metric.format(high)}]"
    return text


def _plain(candidate: Candidate, name: str, pattern: str) -> str:
    value = _value(candidate, name)
    return "-" if math.isnan(value) else pattern.format(value)


def _accuracy_text(candidate: Candidate, axis: str | None) -> str:
    if axis is None:
        return "-"
    return METRICS[axis].format(_value(candidate, axis))


def _marks(candidate: Candidate, objective: Measured) -> list[str]:
    marks = []
    if candidate.recommended:
        marks.append("recommended")
    if candidate.tied:
        marks.append("tie")
    if candidate.pareto:
        marks.append("Pareto")
    if objective.undecidable:
        marks.append("noisy")
    if candidate.synthesized:
        marks.append("not measured alone")
    return marks


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    from pytest_modelopt.readable import one_line

    rows = [tuple(one_line(cell, limit=None) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def choose_runs(
    runs: Sequence[Run],
    budgets: Iterable[str] | Mapping[str, float | str] | Sequence[Budget] | None = None,
    objective: str = "latency",
    *,
    specs: Sequence[str] | None = None,
    searches: bool = False,
) -> list[Choice]:
    """Choose a variant per machine and model from results files.

    One Choice per fingerprint and model (a merged nightly matrix holds several machines), each
    from the latest run of that fingerprint that measured the model. With ``searches``, also one
    per search in the files (``@pytest.mark.modelopt_best``), from that search's candidates
    alone, as the session's search chose (the latest run of that fingerprint holding that
    search); its ``note`` says when the session's answer differs.
    """
    parsed = _budgets(budgets)
    chosen = parse_objective(objective)  # a bad objective is an error before anything is read
    groups = _latest_groups(runs, searches=searches)
    known = sorted({spec for _, spec, _ in groups})
    unknown = sorted(set(specs or ()) - set(known))
    if unknown:
        raise InvalidFileError(
            f"no results for model {', '.join(unknown)}; the files hold {', '.join(known)}"
        )
    choices = []
    for (fingerprint, spec, _), (records, recorded) in sorted(groups.items()):
        if specs and spec not in specs:
            continue
        if records:
            choice = choose(records, parsed, objective, fingerprint=fingerprint)
        else:  # a search that measured nothing: in the session, too, nothing was recommended
            choice = Choice(spec, fingerprint, chosen, parsed, [], None)
        if recorded is not None:
            choice.search = recorded.test
            choice.note = _differs_from_session(choice, recorded)
        choices.append(choice)
    return choices


def _latest_groups(
    runs: Sequence[Run], *, searches: bool
) -> dict[tuple[str, str, str], tuple[list[Mapping[str, Any]], RecordedSearch | None]]:
    """Group the records to choose among by fingerprint, model and search.

    (fingerprint, model, search test or "") -> the records to choose among, from the latest run
    of that fingerprint holding them, with the search they came from (None: ``results``).
    """
    latest: dict[tuple[str, str, str], tuple[list[Mapping[str, Any]], RecordedSearch | None]] = {}
    for run in sorted(runs, key=lambda r: r.created):
        for spec in sorted({str(record["spec"]) for record in run.records}):
            records: list[Mapping[str, Any]] = [r for r in run.records if r["spec"] == spec]
            latest[(run.fingerprint, spec, "")] = (records, None)
        for recorded in run.searches if searches else []:
            latest[(run.fingerprint, recorded.spec, recorded.test)] = (
                list(recorded.records),
                recorded,
            )
    return latest


def _differs_from_session(choice: Choice, recorded: RecordedSearch) -> str | None:
    """Say what the session's search answered, when this reading of its records answers otherwise.

    It may where other budgets or another objective are asked, or under other rules (another
    pytest-modelopt); None when the recommendation and the tied set are the same.
    """
    best = choice.recommended
    answer = (best.label if best else None, [c.label for c in choice.tied])
    if answer == (recorded.recommended, recorded.tied):
        return None
    asked = (choice.objective.name, [f"{b.metric.name} {b}" for b in choice.budgets])
    why = (
        "this reading asks for other budgets or another objective"
        if asked != (recorded.objective, recorded.budgets)
        else "the same objective and budgets: the rules that choose differ (another "
        "pytest-modelopt version?)"
    )
    return (
        f"in the session this search recommended {recorded.recommended or 'nothing'} (tied: "
        f"{', '.join(recorded.tied) or 'none'}) for objective {recorded.objective} under "
        f"{', '.join(recorded.budgets) or 'no constraints'}; {why}"
    )


# -- searching: build and measure candidates on this machine (Evaluator.best) -------------------

# The order singles are tried in when the time budget may not cover them all: fast to build and
# often fastest first (the suites' measurements), the slow builds (PT2E, inductor, training)
# later; techniques not named here follow, by name.
PRIORITY = (
    "torchscript",
    "onnxruntime",
    "openvino",
    "onnxruntime_static_int8",
    "openvino_int8",
    "dynamic_int8",
    "openvino_fp32",
    "export",
    "pruned_structured",
    "lowrank",
    "static_int8",
    "compile",
    "clustered",
    "pruned_unstructured",
    "distilled",
    "qat_int8",
)


@dataclass
class SearchResult:
    """What ``Evaluator.best`` did and chose.

    The Choice over what it measured, each measured variant, and what it did not measure, with
    why (``skipped``: this machine or model cannot run it; ``failed``: the build failed;
    ``pruned``: a chain not built because a part broke a quality budget; ``untried``: not
    started, the time budget being spent).
    """

    choice: Choice
    records: list[dict[str, Any]]
    results: dict[str, VariantResult] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    pruned: list[tuple[str, str]] = field(default_factory=list)
    untried: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    max_time_s: float = math.inf
    hardware: Hardware | None = None

    @property
    def recommended(self) -> Candidate | None:
        """Return the recommended candidate, or None when no candidate is feasible."""
        return self.choice.recommended

    def write_results(self, path: Path) -> None:
        """Write the measured candidates as a results file (the ``--modelopt-json`` format).

        ``modelopt best``, ``report`` and ``merge`` read it: the same records give the same
        choice.
        """
        import dataclasses
        import datetime as dt
        import json

        from pytest_modelopt.atomic import atomic_write_text
        from pytest_modelopt.report import environment
        from pytest_modelopt.results import SCHEMA

        hardware: dict[str, Any] = {"cpu": {}}
        if self.hardware is not None:
            detected = dataclasses.replace(self.hardware, machine=None).fingerprint
            hardware = {**self.hardware.to_dict(), "detected_fingerprint": detected}
        document = {
            "schema": SCHEMA,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "fingerprint": self.choice.fingerprint or "unknown",
            "hardware": hardware,
            "environment": environment(),
            "settings": {"search": self.to_dict() | {"candidates": None}},
            "results": self.records,
        }
        text = json.dumps(_json_ready(document), indent=2, sort_keys=True, default=str)
        atomic_write_text(path, text + "\n")

    @property
    def ranked(self) -> list[Candidate]:
        """Return the feasible candidates, in rank order."""
        return self.choice.ranked

    @property
    def front(self) -> list[Candidate]:
        """Return the feasible candidates on the Pareto front."""
        return self.choice.front

    def summary(self) -> str:
        """One line: time spent, what was built, and what was not."""
        return (
            f"search of {self.choice.spec}: {self.elapsed_s:.1f} s of {self.max_time_s:g} s; "
            f"{len(self.records)} measured, {len(self.failed)} failed to build, "
            f"{len(self.skipped)} skipped, {len(self.pruned)} chains pruned, "
            f"{len(self.untried)} untried"
        )

    def table(self) -> str:
        """Format the choice's table, the summary line, and what was skipped, failed or pruned."""
        lines = [self.choice.table(), self.summary()]
        for title, entries in (
            ("skipped", self.skipped),
            ("failed", self.failed),
            ("pruned", self.pruned),
        ):
            if entries:
                lines.append(f"{title}:")
                lines += [f"  {name}: {why}" for name, why in entries]
        if self.untried:
            lines.append(f"untried (time budget spent): {', '.join(self.untried)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the search's choice and what it did not measure, as JSON-ready values."""
        # a search's own choice: "search" and "note" describe a later reading of its records
        choice = {k: v for k, v in self.choice.to_dict().items() if k not in ("search", "note")}
        return {
            **choice,
            "elapsed_s": self.elapsed_s,
            "max_time_s": _finite(self.max_time_s),
            "skipped": [list(entry) for entry in self.skipped],
            "failed": [list(entry) for entry in self.failed],
            "pruned": [list(entry) for entry in self.pruned],
            "untried": self.untried,
        }


def search(
    evaluator: Evaluator,
    budgets: Iterable[str] | Mapping[str, float | str] | None = None,
    *,
    techniques: Sequence[str] | None = None,
    chains: bool = True,
    objective: str = "latency",
    max_time: float = 600.0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    first: Sequence[str] = (),
) -> SearchResult:
    """Search for the variant to ship: build, measure and choose among the techniques.

    Build and measure the techniques that apply to the evaluator's spec on this machine, then
    the chains of the ones that kept the quality budgets, within ``max_time`` seconds for the
    whole search, and choose among them (``choose``). See ``Evaluator.best``. ``first`` (a
    recorded choice, chains included) is measured before anything else and whatever the time
    budget: a later run must never fail to check a choice because its search ran out of time
    before reaching it.
    """
    from pytest_modelopt.errors import ModeloptError, RequirementMissing, TrainingDataMissing
    from pytest_modelopt.registry import get_technique, list_techniques

    parsed = _budgets(budgets)
    parse_objective(objective)
    if isinstance(max_time, bool) or not max_time > 0:
        raise ValueError(f"max_time must be a number of seconds > 0, got {max_time!r}")
    names = list(techniques) if techniques is not None else list_techniques(exclude=[REFERENCE])
    for name in [*names, *(part for chain in first for part in chain.split("+"))]:
        get_technique(name)  # an unknown name is an error before anything is built
    spec, log = evaluator.spec.name, evaluator.log
    fingerprint = evaluator.hardware.fingerprint
    empty = Choice(spec, fingerprint, parse_objective(objective), parsed, [], None)
    found = SearchResult(choice=empty, records=[], max_time_s=float(max_time))
    start = time.monotonic()
    queue = []
    for name in sorted(dict.fromkeys(names), key=_priority):
        technique = get_technique(name)
        missing = technique.unmet(evaluator.hardware)
        if missing is not None:
            found.skipped.append((name, missing.reason))
        elif spec_framework(evaluator) not in technique.frameworks:
            found.skipped.append(
                (name, f"applies to {'/'.join(technique.frameworks)} models, not {spec}'s")
            )
        else:
            queue.append(name)
    for name, why in found.skipped:
        log(f"search {spec}: skipping {name}: {why}")

    def measure(batch: list[str], stage: str, timed: bool = True) -> None:
        for index, name in enumerate(batch):
            elapsed = time.monotonic() - start
            if timed and elapsed >= max_time:
                found.untried += batch[index:]
                log(
                    f"search {spec}: time budget spent ({elapsed:.0f} s of {max_time:g} s): "
                    f"not trying {', '.join(batch[index:])}"
                )
                return
            log(
                f"search {spec}: {stage} {index + 1}/{len(batch)}: {name}: building and "
                f"measuring ({elapsed:.0f} s elapsed, {max_time - elapsed:.0f} s left, "
                f"{len(batch) - index - 1} more after it)"
            )
            try:
                result = evaluator.evaluate(name, _params_of(params, name))
            except (RequirementMissing, TrainingDataMissing) as missing:
                # a search tries every technique: one the spec gives no data for does not apply
                reason = str(missing).splitlines()[0]
                found.skipped.append((name, reason))
                log(f"search {spec}: {name} skipped: {reason}")
                continue
            except ModeloptError as error:
                found.failed.append((name, str(error).splitlines()[0]))
                log(f"search {spec}: {name} failed: {str(error).splitlines()[0]}")
                continue
            found.results[name] = result
            found.records.append({"test": f"{spec}::search[{name}]", **result.to_dict(raw=False)})

    if first:
        measure(list(first), "recorded choice", timed=False)
        queue = [name for name in queue if name not in first]
    measure(queue, "candidate")
    if chains and not found.untried:
        batch = [
            name
            for name in _chains(found, parsed, objective, names, found.pruned)
            if name not in first
        ]
        for name, why in found.pruned:
            log(f"search {spec}: not chaining {name}: {why}")
        if batch:
            log(f"search {spec}: {len(batch)} chains to try: {', '.join(batch)}")
        measure(batch, "chain")
    found.elapsed_s = time.monotonic() - start
    found.hardware = evaluator.hardware
    if found.records:
        found.choice = choose(found.records, parsed, objective, fingerprint=fingerprint)
    log(f"search {spec}: {found.summary()}")
    log(f"search {spec}: {found.choice.verdict()}")
    return found


def spec_framework(evaluator: Evaluator) -> str:
    """Return the kind of the evaluator's model: ``torch``, ``keras`` or ``python``."""
    return str(evaluator.spec.framework)


def _priority(name: str) -> tuple[int, str]:
    return (PRIORITY.index(name) if name in PRIORITY else len(PRIORITY), name)


def _params_of(params: Mapping[str, Mapping[str, Any]] | None, name: str) -> dict[str, Any]:
    """Return a technique's parameters from ``{technique: {...}}``.

    A chain takes its parts' entries.
    """
    if not params:
        return {}
    if "+" in name:
        return {part: dict(params[part]) for part in name.split("+") if part in params}
    return dict(params.get(name, {}))


def _chains(
    found: SearchResult,
    budgets: list[Budget],
    objective: str,
    asked: Sequence[str],
    pruned: list[tuple[str, str]],
) -> list[str]:
    """Return the useful chains, the most promising first.

    A technique that yields a changed fp32 torch module (pruning, low rank, clustering,
    distillation) then one that deploys or quantizes it, both having kept the quality budgets on
    their own; the most promising is the one with the best product of the two parts' objective
    figures.
    """
    choice = choose(found.records, budgets, objective) if found.records else None
    candidates = {c.technique: c for c in choice.candidates} if choice else {}
    firsts: list[str] = []
    seconds: list[str] = []
    for name, result in found.results.items():
        if "+" in name:
            continue
        candidate = candidates.get(name)
        breaks = candidate is not None and candidate.breaks_quality()
        yields_module = (
            result.variant.model is not None
            and result.variant.precision == result.reference.precision
        )
        if breaks and candidate is not None:
            target = f"{name}+..." if yields_module else f"...+{name}"
            pruned.append((target, f"{name} alone: {candidate.why_excluded()}"))
            continue
        (firsts if yields_module else seconds).append(name)
    metric = "size_ratio" if objective == "size" else "speedup"

    def promise(chain: tuple[str, str]) -> float:
        a, b = (found.results[part].metrics.get(metric) for part in chain)
        value = (a.value if a else 1.0) * (b.value if b else 1.0)
        return value if metric == "size_ratio" else -value

    pairs = sorted(((a, b) for a in firsts for b in seconds), key=promise)
    return [f"{a}+{b}" for a, b in pairs if f"{a}+{b}" not in asked]


# -- the recorded choice: a contract that later runs check (the modelopt_best marker) -----------


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
    is never surely beaten and never surely beats; a point is its own interval.
    """
    a_low, a_high = _bounds(a)
    b_low, b_high = _bounds(b)
    if objective.higher_is_better:
        limit = b_high + tolerance if absolute else b_high * (1 + tolerance)
        return a_low > limit
    limit = b_low - tolerance if absolute else b_low * (1 - tolerance)
    return a_high < limit


def _better_word(objective: Objective) -> str:
    if objective.metric.name in SPEED_METRICS:
        return "faster"
    if objective.name == "size":
        return "smaller"
    return "better"


def contract_of(found: SearchResult) -> dict[str, Any] | None:
    """Return what a baseline records of a search's choice.

    The objective and budgets it was made under, the recommended technique with its objective
    value and interval, and the tied set. None when nothing was recommended (nothing to record).
    """
    choice = found.choice
    best = choice.recommended
    if best is None:
        return None
    value = choice._value(best)
    return {
        "objective": choice.objective.name,
        "metric": choice.objective.metric.name,
        "budgets": [f"{b.metric.name} {b}" for b in choice.budgets],
        "recommended": best.technique,
        "value": _finite(value.value),
        "interval": [_finite(side) for side in value.interval] if value.interval else None,
        "tied": [c.technique for c in choice.tied],
        "front": [c.technique for c in choice.front],
        "verdict": choice.verdict(),
        "measured": len(found.records),
    }


@dataclass
class ContractCheck:
    """A recorded choice against a new search.

    ``status`` is ``kept`` (still feasible and tied for best within the tolerance), ``beaten`` (a
    feasible candidate is now surely better, beyond the tolerance), ``infeasible`` (it breaks or
    cannot decide a budget), ``unmeasured`` (this search did not measure it) or
    ``other budgets`` (the marker's budgets or objective are not those of the record);
    ``message`` says so in words.
    """

    status: str
    recorded: str
    message: str
    beaten_by: list[str] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        """Return whether the recorded choice still holds."""
        return self.status == "kept"

    def to_dict(self) -> dict[str, Any]:
        """Return the check as the results JSON records it."""
        return {
            "status": self.status,
            "recorded": self.recorded,
            "message": self.message,
            "beaten_by": self.beaten_by,
        }


def check_contract(
    stored: Mapping[str, Any],
    found: SearchResult,
    tolerance: float,
    *,
    absolute: bool = False,
) -> ContractCheck:
    """Judge a recorded choice (``contract_of``'s dict) against a new search.

    It is kept when it is still feasible and no feasible candidate is surely better than it
    beyond ``tolerance`` (its interval past the recorded choice's better end by more than that).
    """
    choice = found.choice
    technique = str(stored["recommended"])
    objective = choice.objective
    asked = [f"{b.metric.name} {b}" for b in choice.budgets]
    recorded_under = (str(stored["objective"]), list(stored["budgets"]))
    if recorded_under != (objective.name, asked):
        return ContractCheck(
            "other budgets",
            technique,
            f"the recorded choice {technique} was made for objective {stored['objective']} "
            f"under {', '.join(stored['budgets']) or 'no constraints'}; this test now asks for "
            f"objective {objective.name} under {', '.join(asked) or 'no constraints'}, so it "
            "cannot be compared",
        )
    candidate = next((c for c in choice.candidates if c.technique == technique), None)
    if candidate is None:
        why = dict(found.skipped + found.failed + found.pruned).get(technique)
        if why is None and technique in found.untried:
            why = "not started: the search's time budget was spent"
        return ContractCheck(
            "unmeasured",
            technique,
            f"the recorded choice {technique} was not measured by this search"
            + (f": {why}" if why else ""),
        )
    if not candidate.feasible:
        return ContractCheck(
            "infeasible",
            technique,
            f"the recorded choice {technique} no longer meets its budgets: "
            f"{candidate.why_excluded()}",
        )
    beaten = choice.surely_better_than(candidate, tolerance, absolute=absolute)
    metric = objective.metric
    own = _show(metric, choice._value(candidate))
    margin = metric.format(tolerance) if absolute else f"{tolerance:.0%}"
    if beaten:
        others = " and ".join(f"{c.label} ({_show(metric, choice._value(c))})" for c in beaten)
        return ContractCheck(
            "beaten",
            technique,
            f"the recorded choice {technique} ({metric.name} {own}) is no longer the best: "
            f"{others} {'is' if len(beaten) == 1 else 'are'} now surely "
            f"{_better_word(objective)}, beyond the {margin} tolerance",
            [c.technique for c in beaten],
        )
    best = choice.recommended
    if candidate.recommended or best is None:
        standing = "still the recommendation"
    elif candidate.tied:
        standing = f"still tied for best with the recommendation {best.label}"
    else:
        standing = (
            f"still within the {margin} tolerance of the best (the recommendation is {best.label})"
        )
    return ContractCheck(
        "kept", technique, f"the recorded choice {technique} ({metric.name} {own}) is {standing}"
    )
