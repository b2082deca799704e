"""The bundled suites' own check (suites/conftest.py): under --modelopt-strict, every variant's
fraction of this machine's peak lies in (0, 1], and a variant read faster than the peak fails its
suite test; without it, the table flags the variant and the test keeps its verdict."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path

import pytest

from pytest_modelopt.efficiency import PEAK_METHOD, Ceiling, Peak, peak_cache_file, runtime_versions
from pytest_modelopt.hardware import detect_hardware

pytestmark = pytest.mark.skipif(find_spec("torch") is None, reason="the suite needs torch")

SUITES_CONFTEST = Path(__file__).parents[1] / "suites" / "conftest.py"

# A model whose counted operations TorchScript does not run: the eager reference computes a 2
# GFLOP product it throws away, TorchScript's dead-code elimination drops it. Its variant reads
# far above any real peak, as a runtime with Winograd convolutions can: a measurement problem
# that measuring the peak again cannot clear.
TINY_TORCH_SUITE = """
import pytest
import torch

from pytest_modelopt import ModelSpec


class DeadBranch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Linear(2048, 2048)
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x):
        thrown_away = self.unused(torch.ones(256, 2048))
        return self.head(x)


@pytest.fixture
def modelopt_spec():
    generator = torch.Generator().manual_seed(0)
    return ModelSpec.from_torch(
        "tiny", DeadBranch, example_input=torch.randn(8, 64, generator=generator)
    )


@pytest.mark.modelopt(techniques=["torchscript"])
def test_tiny(modelopt_variant):
    pass
"""

PEAK = Peak(
    precision="fp32",
    ops_per_s=1e18,
    kernel="a kernel written by the test",
    threads=1,
    ceiling=Ceiling(None, 1, 32, None, "unknown", "1 core"),
    kernels=(),
)


def run_suite_with_peak(pytester: pytest.Pytester, peak: Peak, *options: str) -> pytest.RunResult:
    """The tiny suite under the suites' conftest, with ``peak`` as this machine's cached fp32
    peak on one thread."""
    pytester.makeconftest(SUITES_CONFTEST.read_text())
    pytester.makepyfile(test_tiny=TINY_TORCH_SUITE)
    fingerprint = detect_hardware().fingerprint
    cache = peak_cache_file(
        pytester.path / ".pytest_cache" / "d" / "modelopt", fingerprint=fingerprint, threads=1
    )
    cache.parent.mkdir(parents=True)
    document = {"method": PEAK_METHOD, "versions": runtime_versions(), "peaks": {"fp32": peak}}
    cache.write_text(json.dumps(document, default=lambda p: p.to_dict()))
    return pytester.runpytest("--modelopt-threads", "1", "--modelopt-max-time", "0.5", *options)


def test_a_variant_below_the_peak_passes(pytester: pytest.Pytester) -> None:
    result = run_suite_with_peak(pytester, PEAK, "--modelopt-strict")
    result.assert_outcomes(passed=1)


def test_a_variant_above_a_too_low_peak_fails_the_suite_test(pytester: pytest.Pytester) -> None:
    result = run_suite_with_peak(pytester, replace(PEAK, ops_per_s=1.0), "--modelopt-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*fraction of peak outside (0, 1]:",
            "*torchscript: achieved * GOP/s is *x the measured fp32 peak (*",
        ]
    )


def test_without_strict_mode_a_bad_peak_is_flagged_not_failed(pytester: pytest.Pytester) -> None:
    result = run_suite_with_peak(pytester, replace(PEAK, ops_per_s=1.0))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*torchscript*BAD PEAK*"])
