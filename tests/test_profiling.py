"""Operator profiles: each runtime's profiler on a tiny real model, the table of what changed,
and a wall-clock regression explained by operator in the failure and the results JSON."""

import json
import subprocess
import sys

import pytest

from pytest_modelopt.baselines import (
    FUNCTIONS,
    NO_STORED_PROFILE,
    OPERATORS,
    BaselineEntry,
    Tolerances,
    compare,
    format_top_diff,
    top_diff,
    what_grew,
)
from pytest_modelopt.budget import Verdict
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
    variant = Variant(
        lambda batch: batch, (), runtime="litert 2.1", precision="i8", technique="tflite_int8"
    )
    assert operator_profile(variant, 1.0) == {}
    assert why_none(variant) == "no operator profiler for litert 2.1 variants"
    new = {"top_operators": {}, "size_bytes": 1}
    why = "no operator profiler for litert 2.1 variants"
    text, rows = what_grew({}, new, {"variant": why})
    assert text == f"what changed, by operator: not shown: {why}"
    assert rows == {"operators_unavailable": why}


def test_importing_the_profiler_and_baselines_imports_no_backend() -> None:
    code = (
        "import sys, pytest_modelopt.profiling, pytest_modelopt.baselines; "
        "print([m for m in ('torch', 'onnxruntime', 'openvino', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_diff_ranks_what_changed_most_for_functions_and_operators() -> None:
    stored = {"conv": 1000.0, "gemm": 5000.0, "relu": 10.0}
    new = {"conv": 1300.0, "gemm": 5000.0, "pad": 50.0}
    assert top_diff(stored, new) == [
        ("conv", 1000.0, 1300.0),
        ("pad", None, 50.0),
        ("relu", 10.0, None),
    ]
    table = format_top_diff(stored, new, FUNCTIONS)
    assert "function (self Ir per call)" in table
    assert "+300" in table
    assert "gemm" not in table

    # a baseline from before counted functions named their stripped library
    stored = {"0x191eff0": 2_493_984.0, "_PyEval_EvalFrameDefault": 90_000.0}
    new = {"0x191eff0 in libonnxruntime.so": 2_493_984.0, "_PyEval_EvalFrameDefault": 180_000.0}
    assert top_diff(stored, new) == [("_PyEval_EvalFrameDefault", 90_000.0, 180_000.0)]

    stored_ms = {"Conv": 0.5, "Gemm": 0.2, OUTSIDE: 0.01}
    new_ms = {"Conv": 0.5004, "Gemm": 0.9, OUTSIDE: 0.01}
    table = format_top_diff(stored_ms, new_ms, OPERATORS)
    lines = table.splitlines()
    assert lines[0] == "what changed, by operator (- : not in that run's top 30):"
    assert lines[1].split("  ")[0] == "operator (self ms per call)"
    assert lines[3].split() == ["Gemm", "0.200", "0.900", "+0.700"]
    assert lines[4].split() == ["Conv", "0.500", "0.500", "+0.000"]
    assert OUTSIDE not in table  # unchanged


def test_a_regression_explained_by_both_sides_operators() -> None:
    stored = {"top_operators": {"Conv": 0.5}, "reference_top_operators": {"aten::addmm": 0.3}}
    new = {"top_operators": {"Conv": 0.9}, "reference_top_operators": {"aten::addmm": 0.2}}
    text, rows = what_grew(stored, new)
    assert "what changed, by operator" in text
    assert "what changed, by reference operator" in text
    assert rows == {
        "operators": [{"operator": "Conv", "baseline": 0.5, "measured": 0.9}],
        "reference_operators": [{"operator": "aten::addmm", "baseline": 0.3, "measured": 0.2}],
    }
    counted = {"meter": "instructions", "top_functions": {"f": 20.0}}
    text, rows = what_grew({"top_functions": {"f": 10.0}}, counted)
    assert rows == {"functions": [{"function": "f", "baseline": 10.0, "measured": 20.0}]}


def test_an_old_entry_without_a_profile_still_compares_and_says_to_rerecord() -> None:
    old = {
        "spec": "toy",
        "technique": "t",
        "recorded": "2026-01-01T00:00:00+00:00",
        "speedup": {"value": 2.0, "interval": [1.9, 2.1]},
        "size_bytes": 100,
        "accuracy": {},
    }
    new = {
        **old,
        "speedup": {"value": 0.5, "interval": [0.45, 0.55]},
        "top_operators": {"Conv": 0.9, OUTSIDE: 0.1},
    }
    typed = BaselineEntry.from_json(old), BaselineEntry.from_json(new)
    checks = compare(*typed, Tolerances(), same_hardware=True)
    assert [c.verdict for c in checks] == [Verdict.FAIL, Verdict.PASS]
    text, rows = what_grew(old, new, {})
    assert NO_STORED_PROFILE in text
    assert "--modelopt-save-baseline" in text
    assert rows == {"operators_unavailable": NO_STORED_PROFILE}


TORCH_CONFTEST = """
import pytest
import torch

from pytest_modelopt import ModelSpec


@pytest.fixture(scope="module")
def modelopt_spec():
    def factory():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                   torch.nn.Linear(256, 10)).eval()

    example = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    return ModelSpec.from_torch("mlp", factory, example_input=example)
"""
# As tests/test_baselines.py's projects: a loose gate and a 4x slowdown (the plumbing is tested,
# not the engine's resolution), one thread, and a longer timing for the run that must fail.
WALL_INI = """
[pytest]
modelopt_max_time = 0.3
modelopt_warmup = 0.05
modelopt_noise = 5
modelopt_confidence = 0.95
modelopt_speedup_tolerance = 0.5
modelopt_threads = 1
"""
TORCHSCRIPT_TEST = """
import pytest

@pytest.mark.modelopt(techniques=["torchscript"])
def test_mlp(modelopt_variant):
    modelopt_variant.expect(size_ratio="<=2")
"""


def test_a_wall_regression_shows_what_grew_by_operator(pytester: pytest.Pytester) -> None:
    """A saved baseline keeps both sides' top operators; a slowed-down variant fails with the
    table of what grew (the injected busy loop is outside any operator), in the failure and the
    results JSON."""
    pytest.importorskip("torch")
    pytester.makeconftest(TORCH_CONFTEST)
    pytester.makeini(WALL_INI)
    pytester.makepyfile(test_mlp=TORCHSCRIPT_TEST)
    pytester.runpytest("--modelopt-save-baseline").assert_outcomes(passed=1)
    (saved,) = (pytester.path / "baselines").rglob("test_mlp-*.json")
    entry = json.loads(saved.read_text())["entries"]["test_mlp.py::test_mlp[torchscript]"]
    assert "aten::mm" in entry["top_operators"], entry["top_operators"]
    assert "aten::addmm" in entry["reference_top_operators"]

    result = pytester.runpytest(
        "--modelopt-inject-slowdown=torchscript=3",
        "--modelopt-json=results.json",
        "-o",
        "modelopt_max_time=1",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*mlp?torchscript?: regression against the baseline for * (speedup)*",
            "*speedup*FAIL*",
            "what changed, by operator (- : not in that run's top 30):",
            "operator (self ms per call)*baseline*measured*change",
            f"{OUTSIDE}*+*",
            "what changed, by reference operator*",
        ]
    )
    (record,) = json.loads((pytester.path / "results.json").read_text())["results"]
    assert record["baseline"]["status"] == "regressed"
    rows = {row["operator"]: row for row in record["baseline"]["operators"]}
    variant = record["operators"]["variant"]
    in_operators = sum(ms for name, ms in variant.items() if name != OUTSIDE)
    assert rows[OUTSIDE]["measured"] - rows[OUTSIDE]["baseline"] > 0.5 * in_operators, variant
    assert record["baseline"]["reference_operators"]
    assert set(record["operators"]) == {"variant", "reference", "unavailable", "seconds"}
