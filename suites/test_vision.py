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
    "static_int8": {"speedup": ">=1.5", "size_ratio": "<=0.3"},
    "pruned_structured": {"speedup": ">=1.2", "size_ratio": "<=0.6"},
    "lowrank": {"size_ratio": "<=0.95"},
    "clustered": {"size_ratio": "<=0.2"},
    "pruned_structured+static_int8": {"speedup": ">=1.5", "size_ratio": "<=0.2"},
    "openvino_int8": {"speedup": ">=1.2", "size_ratio": "<=0.3"},
    # GPU runtimes: skipped with the reason where there is no NVIDIA GPU.
    "onnxruntime_fp16": {"speedup": ">=1.0", "top1_agreement": ">=95%"},
    "tensorrt": {"speedup": ">=1.0", "top1_agreement": ">=95%"},
}
TECHNIQUES = list(CONTRACTS)
# The ViT: timm's attention is pruned in head dimensions (heads kept) by torch-pruning.
VIT_TECHNIQUES = [
    "eager",
    "torchscript",
    "export",
    "compile",
    "dynamic_int8",
    "static_int8",
    # pruned_structured is left out: torch-pruning's result fails timm's attention reshape on its
    # first call (a BuildError naming the cause), a known gap.
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
    modelopt_variant.expect(**CONTRACTS[modelopt_variant.technique])


@pytest.mark.modelopt(spec="mobilenetv3_small_100", techniques=TECHNIQUES)
def test_mobilenetv3_small_100(modelopt_variant):
    contract = dict(CONTRACTS[modelopt_variant.technique])
    if modelopt_variant.technique == "dynamic_int8":
        contract["size_ratio"] = "<=0.8"  # the 1024x1000 head is most of this model's bytes
    modelopt_variant.expect(**contract)


@pytest.fixture(scope="module")
def vit_tiny_patch16_224() -> ModelSpec:
    return ModelSpec.from_timm("vit_tiny_patch16_224")


@pytest.mark.modelopt(spec="vit_tiny_patch16_224", techniques=VIT_TECHNIQUES)
def test_vit_tiny_patch16_224(modelopt_variant):
    contract = dict(CONTRACTS[modelopt_variant.technique])
    if modelopt_variant.technique == "dynamic_int8":
        contract = {"speedup": ">=1.0", "size_ratio": "<=0.4"}  # a ViT is mostly Linear layers
    modelopt_variant.expect(**contract)


@pytest.fixture(scope="module")
def resnet18_batch8() -> ModelSpec:
    return ModelSpec.from_timm("resnet18", batch_size=8, name="resnet18_batch8")


@pytest.mark.modelopt(spec="resnet18_batch8", techniques=["openvino", "openvino_throughput"])
def test_resnet18_batch8(modelopt_variant):
    """Seed 000's batches and streams: the THROUGHPUT hint splits a batch of 8 across streams."""
    modelopt_variant.expect(speedup=">=1.3", top1_agreement=">=99%")
