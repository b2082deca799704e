"""Operator profiles: each runtime's profiler on a tiny real model."""

import subprocess
import sys

import pytest

from pytest_modelopt.profiling import OUTSIDE, TOP, operator_profile, why_none
from pytest_modelopt.variants.base import Variant

# The operators each family must name on the ConvNet: its convolution and its linear layer.
EXPECTED = {
    "eager": ("aten::mkldnn_convolution", "aten::addmm"),
    "torchscript": ("aten::", "aten::mm"),  # frozen: the mkldnn convolution runs in `forward`
    "onnxruntime": ("Conv", "Gemm"),
    "openvino_fp32": ("Convolution (", "FullyConnected ("),
}
BACKEND = {"onnxruntime": "onnxruntime", "openvino_fp32": "openvino"}


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    pytest.importorskip("torch")
    from models import QUICK, conv_spec
    from pytest_modelopt import Evaluator

    return Evaluator(conv_spec(), settings=QUICK, workdir=tmp_path_factory.mktemp("profiles"))


@pytest.mark.parametrize("technique", sorted(EXPECTED))
def test_each_runtime_names_its_operators_with_their_times(evaluator, technique) -> None:
    backend = BACKEND.get(technique)
    if backend:
        pytest.importorskip(backend)
    variant = evaluator.build(technique)
    assert why_none(variant) is None
    profile = operator_profile(variant, evaluator.spec.example_input)
    assert 2 <= len(profile) <= TOP
    assert profile[OUTSIDE] >= 0
    operators = {name: ms for name, ms in profile.items() if name != OUTSIDE}
    assert all(ms > 0 for ms in operators.values()), operators
    for expected in EXPECTED[technique]:
        assert any(name.startswith(expected) for name in operators), (expected, operators)
    assert list(operators.values()) == sorted(operators.values(), reverse=True)
    assert len(operator_profile(variant, evaluator.spec.example_input, top=3)) == 3


def test_a_runtime_without_a_profiler_gets_none_and_says_why(tmp_path) -> None:
    variant = Variant("tflite_int8", lambda batch: batch, (), runtime="litert 2.1", precision="i8")
    assert operator_profile(variant, 1.0) == {}
    assert why_none(variant) == "no operator profiler for litert 2.1 variants"


def test_importing_the_profiler_and_baselines_imports_no_backend() -> None:
    code = (
        "import sys, pytest_modelopt.profiling, pytest_modelopt.baselines; "
        "print([m for m in ('torch', 'onnxruntime', 'openvino', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
