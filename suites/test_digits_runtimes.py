"""Accuracy contracts of the runtime variants on the CNN trained on scikit-learn's digits."""

import pytest

from digits import digits_spec
from pytest_modelopt import ModelSpec

CONTRACTS = {
    "onnxruntime": {"accuracy_drop": "<=0%", "max_abs_error": "<=1e-3"},
    "onnxruntime_static_int8": {"accuracy_drop": "<=1%"},
    "onnxruntime_dynamic_int8": {"accuracy_drop": "<=2%"},
    "onnxruntime_fp16": {"accuracy_drop": "<=0.5%"},
    "tensorrt": {"accuracy_drop": "<=0.5%"},
    "openvino": {"accuracy_drop": "<=0.5%"},
    "openvino_fp32": {"accuracy_drop": "<=0%", "max_abs_error": "<=1e-3"},
    "openvino_int8": {"accuracy_drop": "<=1%", "size_ratio": "<=0.35"},
}


@pytest.fixture(scope="module")
def modelopt_spec(request: pytest.FixtureRequest) -> ModelSpec:
    return digits_spec(request.config.cache.mkdir("modelopt-digits"))


@pytest.mark.modelopt(techniques=list(CONTRACTS))
def test_digits_cnn_runtimes(modelopt_variant):
    modelopt_variant.expect(**CONTRACTS[modelopt_variant.technique])
