"""Accuracy contracts on a model trained here on real data (scikit-learn's digits)."""

import pytest

from digits import digits_spec
from pytest_modelopt import ModelSpec

CONTRACTS = {
    "eager": {"accuracy": ">=95%", "accuracy_drop": "<=0%"},
    "torchscript": {"accuracy_drop": "<=0.5%", "top1_agreement": ">=99%"},
    "dynamic_int8": {"accuracy_drop": "<=1%", "size_ratio": "<=0.4"},
}


@pytest.fixture(scope="module")
def modelopt_spec(request: pytest.FixtureRequest) -> ModelSpec:
    return digits_spec(request.config.cache.mkdir("modelopt-digits"))


@pytest.mark.modelopt(techniques=list(CONTRACTS))
def test_digits_cnn(modelopt_variant):
    modelopt_variant.expect(**CONTRACTS[modelopt_variant.technique])
