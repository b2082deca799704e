"""Accuracy contracts on models trained here on real data (scikit-learn's digits).

Each technique runs with the parameters in PARAMS (fine-tuning steps on the digits training
split where the technique takes them) and must keep the test accuracy within its budget.
"""

import pytest

from digits import digits_gru_spec, digits_spec, resnet18_digits_spec
from pytest_modelopt import ModelSpec

# These models and students are trained in the session (teachers cached once trained); two fresh
# clones trained students that differed on 4 of the 360 test digits (1.1 points of agreement),
# so accuracy regresses only 2 points below the baseline. The budgets below hold regardless.
pytestmark = pytest.mark.modelopt_baseline(accuracy_tolerance=0.02)

PARAMS = {
    "pruned_unstructured": {"sparsity": 0.5, "steps": 100, "lr": 1e-3},
    "pruned_structured": {"ratio": 0.3, "steps": 150, "lr": 1e-3},
    "lowrank": {"energy": 0.9, "steps": 100, "lr": 1e-3},
    "qat_int8": {"steps": 50},
    # Steps, not seconds, end the training: a time box would make the student (and so its
    # accuracy, which the baselines gate to half a point) depend on the machine's speed.
    "distilled": {"max_seconds": 600, "max_steps": 400},
}
CHAIN_PARAMS = {"pruned_structured": PARAMS["pruned_structured"]}

# Budgets: the accuracy drop (points of test accuracy) each technique may cost, and what it must
# save. Techniques that change the arithmetic (int8, pruning, factorization, a smaller student)
# get a small budget; the exact ones (compilation, export) must match.
CONTRACTS = {
    "eager": {"accuracy": ">=93%", "accuracy_drop": "<=0%"},
    "torchscript": {"accuracy_drop": "<=0.5%", "top1_agreement": ">=99%"},
    "export": {"accuracy_drop": "<=0.5%", "top1_agreement": ">=99%"},
    "compile": {"accuracy_drop": "<=0.5%", "top1_agreement": ">=99%"},
    "dynamic_int8": {"accuracy_drop": "<=1%"},
    "static_int8": {"accuracy_drop": "<=2%", "size_ratio": "<=0.5"},
    "qat_int8": {"accuracy_drop": "<=2%", "size_ratio": "<=0.5"},
    "pruned_unstructured": {"accuracy_drop": "<=2%", "gzip_size_ratio": "<=0.8"},
    "pruned_structured": {"accuracy_drop": "<=3%", "size_ratio": "<=0.7"},
    "lowrank": {"accuracy_drop": "<=3%", "size_ratio": "<=0.9"},
    "clustered": {"accuracy_drop": "<=2%", "size_ratio": "<=0.3"},
    "distilled": {"accuracy_drop": "<=5%", "size_ratio": "<=0.6"},
    "pruned_structured+static_int8": {"accuracy_drop": "<=4%", "size_ratio": "<=0.35"},
}
CNN_TECHNIQUES = list(CONTRACTS)
# The GRU: its weights are not Linear or Conv weights, so structured pruning, low-rank and
# clustering have only the small head to work on, and unstructured pruning prunes only that head
# (no size budget). torch.compile does not capture nn.GRU (dynamo's allow_rnn is off): `compile`
# fails on it with NoEffectError, so it is not listed.
GRU_TECHNIQUES = [
    "eager",
    "torchscript",
    "export",
    "dynamic_int8",
    "static_int8",
    "qat_int8",
    "pruned_unstructured",
    "distilled",
]


@pytest.fixture(scope="module")
def digits_cnn(trained_weights_dir) -> ModelSpec:
    return digits_spec(trained_weights_dir)


@pytest.fixture(scope="module")
def resnet18_digits(trained_weights_dir) -> ModelSpec:
    return resnet18_digits_spec(trained_weights_dir)


@pytest.fixture(scope="module")
def digits_gru(trained_weights_dir) -> ModelSpec:
    return digits_gru_spec(trained_weights_dir)


@pytest.mark.modelopt(
    spec="digits_cnn", techniques=CNN_TECHNIQUES, params={**PARAMS, **CHAIN_PARAMS}
)
def test_digits_cnn(modelopt_variant):
    modelopt_variant.expect(**CONTRACTS[modelopt_variant.technique])


@pytest.mark.modelopt(
    spec="resnet18_digits",
    techniques=CNN_TECHNIQUES,
    params={
        **PARAMS,
        **CHAIN_PARAMS,
        "distilled": {"max_seconds": 600, "max_steps": 100},
        # 16 shared values a layer cost the trained resnet18 10 points (96.9% -> 86.9%, no
        # fine-tuning); 64 keep it within the budget at 6 bits an index
        "clustered": {"clusters": 64},
    },
)
def test_resnet18_digits(modelopt_variant):
    contract = dict(CONTRACTS[modelopt_variant.technique])
    if modelopt_variant.technique == "eager":
        # 3 epochs (69 steps, 16 s here) and BatchNorm settled on the training split: 96.9% on an
        # AVX-512 EPYC, 96.4% with the runtimes capped to AVX2. Its weights follow the CPU's
        # kernels, so the floor leaves room below the CNN's; the baselines gate each machine's
        # accuracy to 2 points.
        contract["accuracy"] = ">=90%"
    if modelopt_variant.technique == "lowrank":
        # low rank factorizes Linear and 1x1 convolutions: resnet18 is mostly 3x3 convolutions,
        # so its file stays the same size (1.0004x measured: the extra layer names)
        contract["size_ratio"] = "<=1.01"
    modelopt_variant.expect(**contract)


@pytest.mark.modelopt(
    spec="digits_gru",
    techniques=GRU_TECHNIQUES,
    params={
        **{name: p for name, p in PARAMS.items() if name in GRU_TECHNIQUES},
        "distilled": {"max_seconds": 600, "max_steps": 600, "lr": 1e-2},
    },
)
def test_digits_gru(modelopt_variant):
    contract = dict(CONTRACTS[modelopt_variant.technique])
    if modelopt_variant.technique == "static_int8":
        contract.pop("size_ratio")  # only the Linear head is statically quantized; the GRU stays
    if modelopt_variant.technique in ("qat_int8", "pruned_unstructured"):
        contract = {"accuracy_drop": contract["accuracy_drop"]}
    modelopt_variant.expect(**contract)


@pytest.mark.modelopt_best(
    spec="digits_cnn",
    budgets={"accuracy_drop": "<=1%"},
    objective="latency",
    params=PARAMS,  # the fine-tuning steps the variant tests use, so the answers agree
    max_time=600,  # the recorded choice is measured first, whatever the budget
)
def test_digits_cnn_best(modelopt_best):
    """Issue 14: the variant to ship for the digits CNN on this machine, real accuracy within one
    point. The marker fails the test when nothing meets the budget, when a feasible candidate is
    surely faster than the recommendation, and against a recorded choice that is now beaten."""
    best = modelopt_best.recommended
    print(modelopt_best.table())
    assert best is not None
    assert best.metrics["accuracy_drop"].value <= 0.01
