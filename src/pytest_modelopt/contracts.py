"""What fails a test around its body: a search before it, budgets and the baseline after it.

Each check returns the failure's message, or None; the plugin fails the test with it outside
any ``except`` block, so that the failure shows no chained traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pytest_modelopt.errors import ContractViolation, ModeloptError

if TYPE_CHECKING:
    from pytest_modelopt.baselines import Tolerances
    from pytest_modelopt.search import SearchResult
    from pytest_modelopt.session.baselines import SessionBaselines
    from pytest_modelopt.variant_contract import VariantContract


def violation(check: Callable[[], object]) -> str | None:
    """Run a check and return its ContractViolation's message, if it raises one."""
    try:
        check()
    except ContractViolation as raised:
        return str(raised)
    return None


def search_problem(
    nodeid: str, found: SearchResult, baselines: SessionBaselines, tolerances: Tolerances
) -> str | None:
    """Say why a search does not hold up, if it does not.

    It holds up when the recorded choice still holds (against the baseline), a candidate meets
    the budgets, and none that does is surely better than the recommendation.
    """
    problem = violation(lambda: baselines.compare_choice(nodeid, found, tolerances))
    best = found.recommended
    if problem is None and best is None:
        problem = (
            f"{nodeid}: no candidate meets the budgets of @pytest.mark.modelopt_best\n"
            f"{found.table()}\n"
            "what to do: loosen the budgets, give the search more techniques or max_time, or "
            "see why each candidate was excluded above"
        )
    if problem is None and best is not None:
        better = found.choice.surely_better_than(best)
        if better:
            problem = (
                f"{nodeid}: the recommendation {best.label} is not the best: "
                f"{', '.join(c.label for c in better)} meet the budgets and are surely "
                f"better\n{found.table()}"
            )
    return problem


def budgets_problem(
    nodeid: str, technique: str, budgets: Mapping[str, Any], result: VariantContract
) -> str | None:
    """Judge the marker's budgets for this test's technique, as ``expect`` judges them."""
    if not budgets:
        return None
    where = f"@pytest.mark.modelopt(budgets={{{technique!r}: ...}})"
    try:
        result.expect(**budgets)
    except ContractViolation as raised:
        return f"{raised}\n(budgets from {where})"
    except ModeloptError as error:  # a metric this variant lacks: accuracy without labels, ...
        return f"{nodeid}: {where}: {error}"
    return None


def baseline_problem(
    nodeid: str, result: VariantContract, baselines: SessionBaselines, tolerances: Tolerances
) -> str | None:
    """Compare the variant with its stored baseline; say what regressed, if anything did."""
    return violation(lambda: baselines.compare_with_baseline(nodeid, result, tolerances))
