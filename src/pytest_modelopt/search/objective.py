"""What a choice is asked: the objective that ranks the candidates and the budgets they must meet.

Budgets use ``expect``'s syntax (``"accuracy_drop<=1%"``, ``"size_ratio<=0.5"``); objectives are
``latency``, ``throughput``, ``size`` or any metric name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pytest_modelopt.budget import METRICS, Budget, Metric
from pytest_modelopt.errors import BudgetError

# What each objective ranks by; a counted run (the instructions meter) has no wall clock.
OBJECTIVES = {"latency": "speedup", "throughput": "throughput", "size": "size_bytes"}
COUNTED_OBJECTIVES = {"latency": "instructions_ratio", "throughput": "instructions_ratio"}


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
