import math

import pytest

from pytest_modelopt.budget import (
    LOOSEN_TOLERANCE,
    Budget,
    Check,
    Measured,
    Verdict,
    format_checks,
    judge,
    judge_all,
    what_to_do,
)
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


def _inconclusive(value: float, interval: tuple[float, float], budget: str = ">=1.0") -> Check:
    check = judge(Budget.parse("speedup", budget), Measured(value, interval))
    assert check.verdict is Verdict.INCONCLUSIVE
    return check


def test_what_to_do_estimates_the_timing_that_would_decide() -> None:
    # 1.02x [0.95x, 1.05x] after 3 s: the lower half-width (log 1.02/0.95) must shrink to the
    # distance to 1.0 (log 1.02), 3.6x narrower: about 13x the rounds, 46 s with the margin.
    advice = what_to_do([_inconclusive(1.02, (0.95, 1.05))], timed_s=3.0)
    assert "about 46 s of timing would likely decide it (3.0 s were spent)" in advice
    assert "max_time=47 on the modelopt marker, --modelopt-max-time 47" in advice
    assert "set the budget further from the measured value" in advice
    assert "--modelopt-inconclusive=report" in advice


def test_what_to_do_without_hope_from_more_timing() -> None:
    on_the_budget = what_to_do([_inconclusive(1.001, (0.9, 1.1))], timed_s=3.0)
    assert "lies on the budget (>= 1x): more timing will not settle it" in on_the_budget
    unbounded = what_to_do([_inconclusive(1.2, (0.0, math.inf))], timed_s=3.0)
    assert "3.0 s gave too few rounds for a bounded interval: max_time=12" in unbounded


def test_what_to_do_when_too_noisy() -> None:
    noisy = Measured(1.1, (0.9, 1.3), "too noisy to judge: IQR/median 40% > 25%")
    check = judge(Budget.parse("speedup", ">=1.0"), noisy)
    advice = what_to_do([check], timed_s=3.0, loosen=LOOSEN_TOLERANCE)
    assert "run on a quieter machine" in advice
    assert "--modelopt-noise" in advice


def _speedup_checks(*intervals: tuple[float, float]) -> list[list[Check]]:
    """One judgement per measurement: speedup >= 1.2 against each interval in turn."""
    budget = Budget.parse("speedup", ">=1.2")
    return [[judge(budget, Measured(sum(i) / 2, i))] for i in intervals]


@pytest.mark.parametrize(
    ("intervals", "policy", "again", "failed", "undecided", "fails_inconclusive"),
    [
        # decided at once: no second measurement
        ([(1.5, 1.7)], "fail", 0, 0, 0, False),
        ([(0.9, 1.1)], "fail", 0, 1, 0, False),
        # inconclusive, then decided by the second measurement, either way
        ([(1.1, 1.4), (1.3, 1.4)], "fail", 1, 0, 0, False),
        ([(1.1, 1.4), (1.0, 1.1)], "fail", 1, 1, 0, False),
        # still inconclusive after the retry: the policy says whether the test fails
        ([(1.1, 1.4), (1.15, 1.3)], "fail", 1, 0, 1, True),
        ([(1.1, 1.4), (1.15, 1.3)], "report", 1, 0, 1, False),
    ],
)
def test_one_verdict_path_measures_again_while_undecided(
    intervals, policy, again, failed, undecided, fails_inconclusive
) -> None:
    from pytest_modelopt.verdicts import decide

    judgements = iter(_speedup_checks(*intervals))
    current: list[list[Check]] = [next(judgements)]
    log: list[str] = []
    decision = decide(
        lambda: current[-1],
        measure_again=lambda: current.append(next(judgements)),
        retries=1,
        policy=policy,
        log=log.append,
        label="toy[fake]: inconclusive",
    )
    assert decision.measured_again == again
    assert (len(decision.failed), len(decision.undecided)) == (failed, undecided)
    assert decision.fails_inconclusive is fails_inconclusive
    assert log == ["toy[fake]: inconclusive, measuring once more"] * again


def test_without_a_way_to_measure_again_the_first_judgement_stands() -> None:
    from pytest_modelopt.verdicts import decide

    [checks] = _speedup_checks((1.1, 1.4))
    decision = decide(lambda: checks, measure_again=None, retries=3, policy="fail")
    assert decision.measured_again == 0
    assert decision.fails_inconclusive
