"""Counted contracts: instructions per call under valgrind, gated against a baseline recorded in
another process (baselines/<fingerprint>-counted/).

The wall-clock baselines of the other suites need a 20% tolerance between sessions; counts agree
between fresh processes to well under 0.1% here (docs/verdict-quality.md, section x), so the
counted gate holds at 1%. resnet18 at the digits suites' shape (one channel, 32x32) with weights
from a fixed seed: instruction counts do not depend on the weights' values, and training it is
test_digits' job. Valgrind emulates no AVX-512, so under it every x86 CPU runs the runtimes' AVX2
kernels: the contracts below hold on each, and the baselines are kept per fingerprint all the same.

To see the gate catch a regression, inject one (a fixed loop per call, calibrated on this
machine's timing; the counts say how large it came out):

    pytest suites/test_counted.py --modelopt-inject-slowdown onnxruntime=0.02
"""

import pytest
import timm
import torch

from pytest_modelopt import ModelSpec

# The instructions the reference (eager) executes per call, over the variant's: measured 1.01x
# for TorchScript (the same ATen kernels, less Python), 4.39x for ONNX Runtime and 4.18x for
# OpenVINO (their fused convolutions) on the AVX2 EPYC. The budgets leave room for other
# releases' kernels, not for noise: counts have none to speak of.
CONTRACTS = {
    "torchscript": {"instructions_ratio": ">=0.98"},
    "onnxruntime": {"instructions_ratio": ">=3"},
    "openvino_fp32": {"instructions_ratio": ">=3"},
}


def resnet18_32() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=10)


@pytest.fixture(scope="module")
def modelopt_spec() -> ModelSpec:
    example = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    return ModelSpec.from_torch(
        "resnet18_32",
        resnet18_32,
        example_input=example,
        description="timm resnet18 (in_chans=1) at 32x32, seeded random weights",
    )


@pytest.mark.modelopt(techniques=list(CONTRACTS), measure="instructions")
def test_counted_runtimes(modelopt_variant):
    modelopt_variant.expect(**CONTRACTS[modelopt_variant.technique])
