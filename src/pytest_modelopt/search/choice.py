"""The answer for one model on one machine: ``choose`` and the ``Choice`` it returns.

``choose`` judges each candidate against the budgets, ranks the feasible ones by the objective
(``ranking``) and says why the others were excluded; ``Choice`` formats the ranked table and
the verdict sentence, or gives them as JSON-ready values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_modelopt.budget import METRICS, Budget, Measured, judge
from pytest_modelopt.readable import table_lines
from pytest_modelopt.search.candidates import Candidate, _candidates, _show, _value
from pytest_modelopt.search.objective import Objective, _budgets, parse_objective
from pytest_modelopt.search.ranking import (
    ACCURACY_AXES,
    SPEED_METRICS,
    _mark_front,
    _order,
    _rank,
    _trusted,
    surely_better,
)


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
                self.objective_of(other),
                self.objective_of(candidate),
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
        text = f"recommended: {best.label}, {metric.name} {_show(metric, self.objective_of(best))}"
        others = [c.label for c in self.tied if c is not best]
        if others:
            text += (
                f"; a tie within the intervals with {', '.join(others)} (none is surely "
                f"{'better' if metric.higher_is_better else 'lower'}): chosen for "
                f"{self._why_chosen(best)}"
            )
        noisy = self.objective_of(best).undecidable
        if noisy:
            text += f"; note: {noisy}"
        return text

    def _why_chosen(self, best: Candidate) -> str:
        """Name the first tie-break that separates the recommendation from the next tied one."""
        others = [c for c in self.tied if c is not best]
        reasons = []
        if any(not _trusted(self.objective_of(c)) for c in others) and _trusted(
            self.objective_of(best)
        ):
            reasons.append("a measurement that can decide (bounded, not too noisy)")
        wide = [c for c in others if c.tied_by_width and _trusted(self.objective_of(c))]
        if wide and not best.tied_by_width:
            reasons.append("a median at the level the best measurement guarantees")
        if any(c.steps > best.steps for c in others):
            reasons.append(
                "being the fp32 reference" if best.steps == 0 else "fewer steps than a chain"
            )
        size = _value(best, "size_bytes")
        if any(_value(c, "size_bytes") > size for c in others if c.steps == best.steps):
            reasons.append("a smaller size")
        return ", then ".join(reasons) or "the better median"

    def objective_of(self, candidate: Candidate) -> Measured:
        """Return the candidate's figure on the objective (NaN where it has none)."""
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
                    _show(metric, self.objective_of(candidate)),
                    _plain(candidate, "latency_p50_ms", "{:.4g}"),
                    _plain(candidate, "size_ratio", "{:.3g}x"),
                    _accuracy_text(candidate, accuracy),
                    "; ".join(
                        f"{c.budget.metric.name} {c.budget.metric.format(c.measured.value)} ok"
                        for c in candidate.checks
                    )
                    or "-",
                    ", ".join(_marks(candidate, self.objective_of(candidate))),
                )
            )
        lines = [self.title(), *table_lines(rows)] if self.ranked else [self.title()]
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
    """Rank the records of one model on one machine under the budgets (the package docstring)."""
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


def _unmeasured(metric: str) -> str:
    if metric in {"accuracy", "accuracy_drop", "relative_accuracy_drop"}:
        return f"{metric} not measured: it needs labelled eval data (budget top1_agreement instead)"
    if metric in {"mse", "mse_increase", "relative_mse_increase"}:
        return f"{metric} not measured: it needs a one-output regressor with labelled eval data"
    return f"{metric} not measured for this variant"


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
