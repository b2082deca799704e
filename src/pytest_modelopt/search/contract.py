"""The recorded choice: a contract that later runs check (the ``modelopt_best`` marker).

``contract_of`` is what a baseline records of a search's choice, ``baseline_entry`` the whole entry
(with the recommended variant's size and accuracy); ``check_contract`` judges that record against a
new search: kept, beaten beyond the tolerance, infeasible, unmeasured, or asked under other
budgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_modelopt.search.candidates import _finite, _show
from pytest_modelopt.search.objective import Objective
from pytest_modelopt.search.ranking import SPEED_METRICS

if TYPE_CHECKING:
    from pytest_modelopt.search.result import SearchResult


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
    value = choice.objective_of(best)
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


def baseline_entry(
    found: SearchResult, *, recorded: str, settings: Mapping[str, Any], environment: Any
) -> dict[str, Any] | None:
    """Return the baseline entry of a search; None when nothing was recommended.

    The entry holds the recommended variant's size and accuracy, the settings and environment it
    was searched in, and the choice (:func:`contract_of`).
    """
    from pytest_modelopt.baselines import ACCURACY_METRICS
    from pytest_modelopt.validate import finite_or_none

    contract = contract_of(found)
    best = found.recommended
    if contract is None or best is None or not found.records:
        return None
    entry: dict[str, Any] = {
        "spec": found.choice.spec,
        "technique": best.technique,
        "recorded": recorded,
        "size_bytes": round(best.metrics["size_bytes"].value),
        "reference_bytes": int(found.records[0]["sizes"]["reference_bytes"]),
        "accuracy": {
            name: best.metrics[name].value for name in ACCURACY_METRICS if name in best.metrics
        },
        "settings": {
            **settings,
            "search_max_time": finite_or_none(found.max_time),
            "search_elapsed_s": round(found.elapsed_s, 1),
        },
        "environment": {key: str(value) for key, value in dict(environment).items()},
        "choice": contract,
    }
    meter = found.records[0].get("meter", "wall")
    if meter != "wall":
        entry["meter"] = meter
    return entry


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
    own = _show(metric, choice.objective_of(candidate))
    margin = metric.format(tolerance) if absolute else f"{tolerance:.0%}"
    if beaten:
        others = " and ".join(
            f"{c.label} ({_show(metric, choice.objective_of(c))})" for c in beaten
        )
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
