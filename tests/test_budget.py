import math

import pytest

from pytest_modelopt.budget import Budget, Measured, Verdict, format_checks, judge, judge_all
from pytest_modelopt.errors import BudgetError


@pytest.mark.parametrize(
    ("metric", "spec", "op", "threshold"),
    [
        ("speedup", ">=1.8", ">=", 1.8),
        ("speedup", "1.8x", ">=", 1.8),
        ("speedup", 2, ">=", 2.0),
        ("size_ratio", 0.3, "<=", 0.3),
        ("size_ratio", "< 0.3", "<=", 0.3),
        ("top1_agreement", "99%", ">=", 0.99),
        ("accuracy_drop", "<=0.5%", "<=", 0.005),
        ("latency_p90_ms", "<= 12ms", "<=", 12.0),
    ],
)
def test_parse(metric, spec, op, threshold) -> None:
    budget = Budget.parse(metric, spec)
    assert (budget.op, budget.threshold) == (op, pytest.approx(threshold))


def test_parse_errors_are_specific() -> None:
    with pytest.raises(
        BudgetError, match="unknown budget metric 'sped_up'; known metrics: speedup"
    ):
        Budget.parse("sped_up", 2)
    with pytest.raises(BudgetError, match="not a number"):
        Budget.parse("speedup", "fast")
    with pytest.raises(BudgetError, match="give a number"):
        Budget.parse("speedup", True)


SPEEDUP = Budget.parse("speedup", ">=1.2")


@pytest.mark.parametrize(
    ("measured", "verdict"),
    [
        (Measured(1.5, (1.4, 1.6)), Verdict.PASS),
        (Measured(1.0, (0.95, 1.05)), Verdict.FAIL),
        (Measured(1.21, (1.1, 1.3)), Verdict.INCONCLUSIVE),
        (Measured(1.5, (1.4, 1.6), "too noisy to judge"), Verdict.INCONCLUSIVE),
        (Measured(1.3), Verdict.PASS),
        (Measured(1.1), Verdict.FAIL),
        (Measured(1.5, (1.4, math.inf)), Verdict.PASS),
        (Measured(1.5, (-math.inf, math.inf)), Verdict.INCONCLUSIVE),
    ],
)
def test_verdicts(measured, verdict) -> None:
    assert judge(SPEEDUP, measured).verdict is verdict


def test_unavailable_metric_explains_what_is_missing() -> None:
    with pytest.raises(BudgetError, match="accuracy needs labelled eval data"):
        judge_all({"accuracy": ">=0.9"}, {"speedup": Measured(1.0)})


def test_table_lists_every_metric_with_interval_budget_and_verdict() -> None:
    checks = judge_all(
        {"speedup": ">=1.2", "size_ratio": "<=0.5"},
        {"speedup": Measured(1.21, (1.1, 1.3)), "size_ratio": Measured(0.7)},
    )
    table = format_checks(checks, "model[technique]")
    lines = table.splitlines()
    assert lines[0] == "model[technique]"
    assert lines[1].split() == ["metric", "measured", "interval", "budget", "verdict"]
    assert lines[3].split() == ["speedup", "1.21x", "[1.1x,", "1.3x]", ">=", "1.2x", "INCONCLUSIVE"]
    assert lines[4].split() == ["size_ratio", "0.7x", "<=", "0.5x", "FAIL"]
    assert "budget lies inside the interval [1.1x, 1.3x]" in lines[5]
