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
    "openvino_int8": {"speedup": ">=1.2", "size_ratio": "<=0.3"},
    # GPU runtimes: skipped with the reason where there is no NVIDIA GPU.
    "onnxruntime_fp16": {"speedup": ">=1.0", "top1_agreement": ">=95%"},
    "tensorrt": {"speedup": ">=1.0", "top1_agreement": ">=95%"},
}
TECHNIQUES = list(CONTRACTS)


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
def resnet18_batch8() -> ModelSpec:
    return ModelSpec.from_timm("resnet18", batch_size=8, name="resnet18_batch8")


@pytest.mark.modelopt(spec="resnet18_batch8", techniques=["openvino", "openvino_throughput"])
def test_resnet18_batch8(modelopt_variant):
    """Seed 000's batches and streams: the THROUGHPUT hint splits a batch of 8 across streams."""
    modelopt_variant.expect(speedup=">=1.3", top1_agreement=">=99%")
