"""A measured result never changes; its contract holds the checks and any later measurement."""

import contextlib
import dataclasses

import pytest

from pytest_modelopt.budget import Verdict
from pytest_modelopt.errors import ContractViolation

torch = pytest.importorskip("torch")


@pytest.fixture
def evaluator(tmp_path):
    from models import QUICK, mlp_spec
    from pytest_modelopt import Evaluator

    return Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path, inconclusive="report")


def test_a_result_is_frozen_and_measuring_again_makes_a_new_one(evaluator) -> None:
    contract = evaluator.evaluate("torchscript")
    first = contract.result
    first_comparison = first.comparison
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.comparison = first_comparison  # type: ignore[misc]

    contract.measure_again()

    assert contract.result is not first
    assert first.comparison is first_comparison  # the first measurement is as it was taken
    assert contract.comparison is contract.result.comparison is not first_comparison
    assert contract.result.variant is first.variant  # the same built variant, measured again
    assert contract.to_dict()["latency"] == contract.result.to_dict()["latency"]


def test_an_undecided_check_measures_again_through_the_contract(evaluator) -> None:
    result, remeasure = evaluator.measure("torchscript")
    taken = []

    def counted():
        taken.append(remeasure())
        return taken[-1]

    contract = evaluator.contract(result, counted)
    # A budget in the middle of the measured interval: undecided by the first measurement.
    low, high = contract.metrics["speedup"].interval
    assert low < high
    with contextlib.suppress(ContractViolation):  # the second measurement may decide it
        contract.expect(speedup=f">={(low + high) / 2}")

    assert len(taken) == evaluator.retries == 1
    assert contract.comparison is taken[0]
    assert result.comparison is not taken[0]
    [check] = contract.checks
    assert check.measured.value == contract.metrics["speedup"].value  # judged on the new one
    assert contract.to_dict()["checks"][0]["verdict"] == check.verdict.value


def test_checks_accumulate_in_the_contract_and_cannot_be_edited(evaluator) -> None:
    contract = evaluator.evaluate("torchscript")
    contract.expect(size_ratio="<=2")
    contract.expect(top1_agreement=">=0")
    assert [c.budget.metric.name for c in contract.checks] == ["size_ratio", "top1_agreement"]
    assert contract.verdict is Verdict.PASS
    assert isinstance(contract.checks, tuple)
    assert [c["metric"] for c in contract.to_dict()["checks"]] == ["size_ratio", "top1_agreement"]


def test_a_contract_without_a_way_to_measure_again_says_so(evaluator) -> None:
    from pytest_modelopt.variant_contract import VariantContract

    contract = VariantContract(evaluator.evaluate("torchscript").result)
    assert not contract.can_measure_again
    with pytest.raises(RuntimeError, match=r"mlp\[torchscript\] cannot be measured again"):
        contract.measure_again()
