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
    "static_int8": {"size_ratio": "<=0.3"},  # its speedup budget follows the CPU: INT8_SPEEDUP
    "pruned_structured": {"speedup": ">=1.2", "size_ratio": "<=0.6"},
    "lowrank": {"size_ratio": "<=0.95"},
    "clustered": {"size_ratio": "<=0.2"},
    # int8 must not eat pruning's gain; with AMX it adds its own (CHAIN_SPEEDUP_WITH_AMX)
    "pruned_structured+static_int8": {"speedup": ">=1.2", "size_ratio": "<=0.2"},
    "openvino_int8": {"speedup": ">=1.2", "size_ratio": "<=0.3"},
    # GPU runtimes: skipped with the reason where there is no NVIDIA GPU.
    "onnxruntime_fp16": {"speedup": ">=1.0", "top1_agreement": ">=95%"},
    "tensorrt": {"speedup": ">=1.0", "top1_agreement": ">=95%"},
}
TECHNIQUES = list(CONTRACTS)
# static_int8's speed is the CPU's int8 matrix units': issue 4 measured 4.0x and more on a
# Sapphire Rapids with AMX; with AVX512-VNNI alone (an AMD EPYC, Zen 4) it ran resnet18 at 1.03x
# [0.96, 1.08], vit_tiny at 1.02x [0.91, 1.19] and mobilenetv3 at 1.44x: no slower than fp32, no
# more; on an AVX2-only EPYC, 0.95x and 0.92x: no budget there, its contract is size only. The
# first flag this hardware has sets the budget (an ISA cap hides the flags it forbids).
INT8_SPEEDUP = (("amx_int8", ">=1.5"), ("avx512_vnni", ">=0.9"))
# resnet18 pruned then static int8 is pruning's speed times int8's: 1.70x on the AVX2 EPYC,
# 1.64x then 1.32x [1.21, 1.47] in two sessions on the AVX-512 VNNI EPYC (pruning alone 1.51x and
# 1.40x; int8 1.03x and 1.01x), 1.48x capped to AVX2. Only AMX's int8 units add enough to hold
# 1.5x everywhere.
CHAIN_SPEEDUP_WITH_AMX = ">=1.5"
# What each model's architecture allows, measured on the fingerprints under baselines/.
MODEL_CONTRACTS = {
    # low rank factorizes Linear and 1x1 convolutions; resnet18 is mostly 3x3 convolutions
    "resnet18": {"lowrank": {"size_ratio": "<=1.0"}},
    "mobilenetv3_small_100": {
        "dynamic_int8": {"size_ratio": "<=0.8"},  # the 1024x1000 head is most of its bytes
        # PT2E leaves part of this model in fp32 (0.56x of the bytes measured)
        "static_int8": {"size_ratio": "<=0.6"},
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


def contract(result, hardware) -> dict:
    """The technique's contract for this model on this hardware."""
    technique = result.technique
    chosen = dict(MODEL_CONTRACTS.get(result.spec.name, {}).get(technique, CONTRACTS[technique]))
    if technique == "static_int8":
        speedup = next((budget for flag, budget in INT8_SPEEDUP if hardware.has_isa(flag)), None)
        chosen.pop("speedup", None)
        if speedup is not None:
            chosen["speedup"] = speedup
    if technique == "pruned_structured+static_int8" and hardware.has_isa("amx_int8"):
        chosen["speedup"] = CHAIN_SPEEDUP_WITH_AMX
    return chosen


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
def test_resnet18(modelopt_variant, modelopt_hardware):
    modelopt_variant.expect(**contract(modelopt_variant, modelopt_hardware))


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
def test_mobilenetv3_small_100(modelopt_variant, modelopt_hardware):
    modelopt_variant.expect(**contract(modelopt_variant, modelopt_hardware))


@pytest.fixture(scope="module")
def vit_tiny_patch16_224() -> ModelSpec:
    return ModelSpec.from_timm("vit_tiny_patch16_224")


@pytest.mark.modelopt(spec="vit_tiny_patch16_224", techniques=VIT_TECHNIQUES)
def test_vit_tiny_patch16_224(modelopt_variant, modelopt_hardware):
    modelopt_variant.expect(**contract(modelopt_variant, modelopt_hardware))


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
