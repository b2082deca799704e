"""Regression metrics: MSE of a one-output model against its targets, and its change."""

import numpy as np
import pytest

from pytest_modelopt.budget import judge_all
from pytest_modelopt.errors import BudgetError, BuildError
from pytest_modelopt.metrics import accuracy_metrics


def test_one_output_with_targets_gives_mse_and_its_change() -> None:
    targets = np.array([1.0, 2.0, 3.0, 4.0])
    reference = [np.array([[1.0], [2.0], [3.0], [5.0]])]  # MSE 0.25
    variant = [np.array([[1.0], [2.0], [4.0], [5.0]])]  # MSE 0.5
    metrics = accuracy_metrics(variant, reference, [targets])
    assert metrics["mse"] == pytest.approx(0.5)
    assert metrics["reference_mse"] == pytest.approx(0.25)
    assert metrics["mse_increase"] == pytest.approx(0.25)
    assert metrics["relative_mse_increase"] == pytest.approx(1.0)
    assert "top1_agreement" not in metrics  # one output has no classes


def test_classifier_outputs_get_no_mse() -> None:
    outputs = [np.eye(3)]
    metrics = accuracy_metrics(outputs, outputs, [np.array([0, 1, 2])])
    assert "mse" not in metrics
    assert metrics["accuracy"] == 1.0


def test_targets_must_match_the_outputs() -> None:
    with pytest.raises(BuildError, match="3 regression targets for 2 outputs"):
        accuracy_metrics([np.ones((2, 1))], [np.ones((2, 1))], [np.ones(3)])


def test_mse_budgets_judge_and_explain_when_unmeasured() -> None:
    from pytest_modelopt.budget import Measured, Verdict

    (check,) = judge_all(
        {"relative_mse_increase": "<=5%"}, {"relative_mse_increase": Measured(0.1)}
    )
    assert check.verdict is Verdict.FAIL
    with pytest.raises(BudgetError, match="needs a one-output regressor and labelled eval data"):
        judge_all({"mse": 1.0}, {})
