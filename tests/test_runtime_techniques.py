"""ONNX Runtime and OpenVINO variants on a tiny trained model: each runs where it claims
(provider, device, execution precision) and agrees with its reference."""

import pytest

torch = pytest.importorskip("torch")
from models import QUICK, mlp_spec  # noqa: E402
from pytest_modelopt import Evaluator, ModelSpec  # noqa: E402
from pytest_modelopt.errors import BuildError  # noqa: E402

onnxruntime_required = pytest.mark.modelopt_requires(backend="onnxruntime")
openvino_required = pytest.mark.modelopt_requires(backend="openvino")


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory) -> Evaluator:
    return Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path_factory.mktemp("runtimes"))


@onnxruntime_required
def test_onnxruntime_runs_the_dynamo_export_on_cpu(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("onnxruntime")
    variant = result.variant
    assert variant.details["exporter"] == "dynamo"
    assert variant.details["providers"] == ["CPUExecutionProvider"]
    assert variant.details["intra_op_num_threads"] == QUICK.threads
    names = sorted(path.name for path in variant.files)
    assert names == ["model.onnx", "model.onnx.data"]  # external weights counted in the size
    assert result.sizes["variant_bytes"] >= 0.95 * result.sizes["reference_bytes"]
    assert result.accuracy["top1_agreement"] == 1.0
    assert result.accuracy["max_abs_error"] < 1e-4


@onnxruntime_required
def test_onnxruntime_is_timed_in_blocks_against_torch(evaluator: Evaluator) -> None:
    comparison = evaluator.evaluate("onnxruntime").comparison
    assert comparison.cross_runtime
    assert comparison.variant.discarded_calls >= 1
    assert comparison.reference.discarded_calls >= 1
    assert comparison.variant.block_calls >= 2
    # Each runtime alone in a worker process of its own: no thread pool shares a process.
    assert comparison.isolation == {"variant": "worker process", "reference": "worker process"}
    threads = evaluator.evaluate("onnxruntime").threads
    assert threads == {
        "torch_intra_op": QUICK.threads,
        "intra_op_num_threads": QUICK.threads,
        "inter_op_num_threads": 1,
    }


@onnxruntime_required
def test_onnxruntime_dynamic_int8_quantizes_weights(evaluator: Evaluator) -> None:
    import onnx

    result = evaluator.evaluate("onnxruntime_dynamic_int8")
    model = onnx.load(str(result.variant.files[0]))
    ops = {node.op_type for node in model.graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
    assert result.variant.details["reduce_range"] == (not evaluator.hardware.has_isa("avx512_vnni"))
    assert result.sizes["variant_bytes"] < 0.8 * result.sizes["reference_bytes"]
    assert result.accuracy["top1_agreement"] >= 0.9


@onnxruntime_required
def test_onnxruntime_static_int8_is_qdq_calibrated(tmp_path) -> None:
    import onnx

    spec = mlp_spec()
    spec.calibration_data = [
        torch.randn(32, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)
    ]
    evaluator = Evaluator(spec, settings=QUICK, workdir=tmp_path)
    result = evaluator.evaluate("onnxruntime_static_int8")
    model = onnx.load(str(result.variant.files[0]))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") >= 2
    assert ops.count("DequantizeLinear") >= 2
    assert result.variant.details["calibration_batches"] == 4
    assert result.accuracy["top1_agreement"] >= 0.9


@onnxruntime_required
def test_onnxruntime_static_int8_without_calibration_data_says_what_to_give(evaluator) -> None:
    with pytest.raises(
        BuildError, match="needs calibration data: give ModelSpec 'mlp' calibration_data"
    ):
        evaluator.build("onnxruntime_static_int8")


@openvino_required
def test_openvino_states_its_execution_precision(evaluator: Evaluator) -> None:
    import openvino as ov

    result = evaluator.evaluate("openvino")
    variant = result.variant
    assert variant.details["device"] == "CPU"
    assert variant.details["performance_hint"] == "LATENCY"
    assert variant.details["inference_num_threads"] == QUICK.threads
    cpu = evaluator.hardware.cpu
    expected = "bf16" if "amx_bf16" in cpu.flags or "avx512_bf16" in cpu.flags else "f32"
    assert variant.precision == expected
    assert sorted(p.suffix for p in variant.files) == [".bin", ".xml"]
    ov.Core().read_model(str(variant.files[0]))  # the saved IR loads
    assert result.accuracy["top1_agreement"] >= 0.95


@openvino_required
def test_openvino_fp32_forces_fp32(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("openvino_fp32")
    assert result.variant.precision == "f32"
    assert result.accuracy["max_abs_error"] < 1e-4
    assert result.comparison.cross_runtime


def test_runtime_techniques_skip_a_python_model(tmp_path) -> None:
    from pytest_modelopt.errors import NotApplicable

    spec = ModelSpec(name="callable", factory=lambda: abs, example_input=1.0)
    with pytest.raises(
        NotApplicable, match="onnxruntime: applies to torch models; callable is a python model"
    ):
        Evaluator(spec, settings=QUICK, workdir=tmp_path).build("onnxruntime")
