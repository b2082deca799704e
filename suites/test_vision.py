"""Speed and size contracts for timm vision models.

No weights can be downloaded here, so the models have random weights with BatchNorm statistics
recalibrated on the calibration images: latency and size are real, accuracy is not (agreement with
the reference is shown, and only a loose floor is enforced). Pass ``pretrained=True`` where the
weights are available to make the agreement budgets meaningful.
"""

import pytest

from pytest_modelopt import ModelSpec

# Each technique's contract. dynamic_int8 quantizes only Linear layers, so on these conv nets it
# shrinks the classifier head and must not cost speed; TorchScript must not be slower than eager.
# ONNX Runtime's dynamic int8 runs convolutions as ConvInteger, several times slower than eager on
# conv nets: its contract is size only, and the results table shows the slowdown.
CONTRACTS = {
    "eager": {"size_ratio": "<=1.0", "top1_agreement": "100%"},
    "torchscript": {"speedup": ">=0.9", "size_ratio": "<=1.05", "top1_agreement": ">=99%"},
    "dynamic_int8": {"speedup": ">=0.8", "top1_agreement": ">=90%"},
    "onnxruntime": {"speedup": ">=1.3", "top1_agreement": ">=99%", "max_abs_error": "<=1e-3"},
    "onnxruntime_static_int8": {"speedup": ">=1.1", "size_ratio": "<=0.3"},
    "onnxruntime_dynamic_int8": {"size_ratio": "<=0.3"},
    "openvino": {"speedup": ">=1.3"},
    "openvino_fp32": {"speedup": ">=1.3", "top1_agreement": ">=99%", "max_abs_error": "<=1e-3"},
    # torch techniques: compiled graphs and int8 must pay in speed; pruning and factorization in
    # size (their accuracy is meaningless on random weights, see test_digits for that).
    "export": {"speedup": ">=0.9", "top1_agreement": ">=99%"},
    "compile": {"speedup": ">=1.0", "top1_agreement": ">=99%"},
    # PT2E's int8 convolutions and matmuls (oneDNN) run faster than fp32 on every CPU measured:
    # resnet18 4.3x, vit_tiny 1.9-2.0x and mobilenetv3 1.7x [1.61, 1.78] on the AVX-512 VNNI EPYC;
    # 2.6x, 1.3-1.4x and 1.5-1.6x capped to AVX2 (4x and more with AMX, issue 4). The 1.0x read
    # before was a recompilation that ran fp32 convolutions (docs/architecture.md).
    "static_int8": {"speedup": ">=1.2", "size_ratio": "<=0.3"},
    "pruned_structured": {"speedup": ">=1.2", "size_ratio": "<=0.6"},
    "lowrank": {"size_ratio": "<=0.95"},
    "clustered": {"size_ratio": "<=0.2"},
    # pruning's gain times int8's: resnet18 5.2-5.6x on the AVX-512 VNNI EPYC, 3.6-3.9x capped
    "pruned_structured+static_int8": {"speedup": ">=1.5", "size_ratio": "<=0.2"},
    "openvino_int8": {"speedup": ">=1.2", "size_ratio": "<=0.3"},
    # GPU runtimes: skipped with the reason where there is no NVIDIA GPU.
    "onnxruntime_fp16": {"speedup": ">=1.0", "top1_agreement": ">=95%"},
    "tensorrt": {"speedup": ">=1.0", "top1_agreement": ">=95%"},
}
TECHNIQUES = list(CONTRACTS)
# What each model's architecture allows, measured on the fingerprints under baselines/.
MODEL_CONTRACTS = {
    # low rank factorizes Linear and 1x1 convolutions; resnet18 is mostly 3x3 convolutions
    "resnet18": {"lowrank": {"size_ratio": "<=1.0"}},
    "mobilenetv3_small_100": {
        "dynamic_int8": {"size_ratio": "<=0.8"},  # the 1024x1000 head is most of its bytes
        # PT2E leaves part of this model in fp32 (0.56x of the bytes measured)
        "static_int8": {"speedup": ">=1.2", "size_ratio": "<=0.6"},
        "pruned_structured": {"speedup": ">=1.05", "size_ratio": "<=0.6"},  # depthwise-heavy
        "pruned_structured+static_int8": {"speedup": ">=1.5", "size_ratio": "<=0.4"},
    },
    "vit_tiny_patch16_224": {
        "dynamic_int8": {"speedup": ">=1.0", "size_ratio": "<=0.4"},  # mostly Linear layers
        "onnxruntime": {"speedup": ">=1.1", "top1_agreement": ">=99%"},
        "openvino": {"speedup": ">=1.1"},
        # inductor gains little on a ViT this small: 1.08x on the AVX2 EPYC, 1.13x and 1.02x
        # [0.99, 1.05] on the AVX-512 EPYC, and 0.94x [0.90, 0.99] there in a fresh-clone run
        # whose reference read 32% slower than in the eager row (a disturbed machine). Not slower
        # than eager by more than 10% holds everywhere.
        "compile": {"speedup": ">=0.9", "top1_agreement": ">=99%"},
    },
}


def contract(result) -> dict:
    """The technique's contract for this model."""
    technique = result.technique
    return MODEL_CONTRACTS.get(result.spec.name, {}).get(technique, CONTRACTS[technique])


# The ViT: torch-pruning narrows the embedding, MLP and head dimensions (heads are kept).
VIT_TECHNIQUES = [
    "eager",
    "torchscript",
    "export",
    "compile",
    "dynamic_int8",
    "static_int8",
    "pruned_structured",
    "lowrank",
    "clustered",
    "onnxruntime",
    "openvino",
]


@pytest.fixture(scope="module")
def resnet18() -> ModelSpec:
    return ModelSpec.from_timm("resnet18")


@pytest.fixture(scope="module")
def mobilenetv3_small_100() -> ModelSpec:
    return ModelSpec.from_timm("mobilenetv3_small_100")


@pytest.mark.modelopt(spec="resnet18", techniques=TECHNIQUES)
def test_resnet18(modelopt_variant):
    modelopt_variant.expect(**contract(modelopt_variant))


@pytest.mark.modelopt_best(
    spec="resnet18",
    # one point: random weights have no accuracy, agreement with fp32 is what can be measured;
    # of the 32 images, every top-1 class kept (a bf16 or int8 variant that flips one is out)
    budgets={"top1_agreement": ">=99%"},
    objective="latency",
    max_time=600,  # the recorded choice is measured first, whatever the budget
)
def test_resnet18_best(modelopt_best):
    """Issue 14: the variant to ship for resnet18 on this machine, agreeing with fp32 on the
    top-1 class within one point. Which one wins follows the CPU (int8 and bf16 units, the
    runtimes' kernels), so only the acceptance rule is asserted: something meets the budget
    (fp32 itself always does) and no candidate that meets it is surely faster than the
    recommendation. The marker also fails the test against a recorded choice now beaten."""
    best = modelopt_best.recommended
    print(modelopt_best.table())
    assert best is not None
    assert best.metrics["top1_agreement"].value >= 0.99
    assert modelopt_best.choice.surely_better_than(best) == []


@pytest.mark.modelopt(spec="mobilenetv3_small_100", techniques=TECHNIQUES)
def test_mobilenetv3_small_100(modelopt_variant):
    modelopt_variant.expect(**contract(modelopt_variant))


@pytest.fixture(scope="module")
def vit_tiny_patch16_224() -> ModelSpec:
    return ModelSpec.from_timm("vit_tiny_patch16_224")


@pytest.mark.modelopt(spec="vit_tiny_patch16_224", techniques=VIT_TECHNIQUES)
def test_vit_tiny_patch16_224(modelopt_variant):
    modelopt_variant.expect(**contract(modelopt_variant))


@pytest.fixture(scope="module")
def resnet18_batch8() -> ModelSpec:
    return ModelSpec.from_timm("resnet18", batch_size=8, name="resnet18_batch8")


# A round between runtimes is two blocks of calls, 1.2 s at batch 8 here: 15 s give the rounds a
# verdict needs (the suites' 3 s cap would stop at 2, an unbounded interval).
@pytest.mark.modelopt(
    spec="resnet18_batch8", techniques=["openvino", "openvino_throughput"], max_time=15
)
def test_resnet18_batch8(modelopt_variant):
    """Seed 000's batches and streams: the THROUGHPUT hint splits a batch of 8 across streams."""
    modelopt_variant.expect(speedup=">=1.3", top1_agreement=agreement(modelopt_variant))


def agreement(result) -> str:
    """Top-1 agreement with fp32 for the precision the variant states. Random weights leave
    near-tied logits, and bf16 (OpenVINO's default on CPUs with AVX512-BF16 or AMX, about 3
    significant digits) flipped 1 of the 32 images on an AVX-512 EPYC where f32 flips none."""
    return ">=90%" if result.variant.details.get("execution_precision") == "bf16" else ">=99%"
