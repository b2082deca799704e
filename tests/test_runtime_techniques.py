"""ONNX Runtime and OpenVINO variants on a tiny trained model: each runs where it claims
(provider, device, execution precision) and agrees with its reference."""

import pytest

torch = pytest.importorskip("torch")
from models import QUICK, agreement_tolerance, mlp_spec  # noqa: E402
from pytest_modelopt import Evaluator, ModelSpec  # noqa: E402
from pytest_modelopt.errors import BuildError, HardwareMissing, ParameterError  # noqa: E402

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
    hardware = evaluator.hardware  # the flags the runtimes may use: an ISA cap removes bf16
    expected = "bf16" if hardware.has_isa("amx_bf16") or hardware.has_isa("avx512_bf16") else "f32"
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


def calibrated_mlp_spec() -> ModelSpec:
    spec = mlp_spec()
    spec.calibration_data = [
        torch.randn(32, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)
    ]
    return spec


@openvino_required
@pytest.mark.modelopt_requires(packages="nncf")
def test_openvino_int8_runs_int8_kernels(tmp_path) -> None:
    evaluator = Evaluator(calibrated_mlp_spec(), settings=QUICK, workdir=tmp_path)
    result = evaluator.evaluate("openvino_int8")
    variant = result.variant
    kernels = variant.details["kernel_precisions"]
    assert kernels.get("i8", 0) + kernels.get("u8", 0) >= 2  # both Linear layers run in int8
    assert variant.precision.startswith("int8 (")
    fp32 = evaluator.build("openvino_fp32")
    assert "i8" not in fp32.details["kernel_precisions"]
    assert variant.files[1].stat().st_size < 0.5 * fp32.files[1].stat().st_size  # int8 weights
    assert result.accuracy["top1_agreement"] >= 0.9


@openvino_required
@pytest.mark.modelopt_requires(packages="nncf")
def test_openvino_int8_without_calibration_data_says_what_to_give(evaluator) -> None:
    with pytest.raises(BuildError, match="openvino_int8 needs calibration data"):
        evaluator.build("openvino_int8")


@openvino_required
def test_openvino_reads_bound_inputs_as_they_are_now(evaluator: Evaluator) -> None:
    """Inputs are bound once without a copy: a repeated call, an array changed in place, a new
    object of another dtype and the worker's numpy arrays all give the reference's answer."""
    variant = evaluator.build("openvino_fp32")
    eager = evaluator.build("eager")

    def agrees(batch) -> bool:
        expected = eager.run(torch.as_tensor(batch, dtype=torch.float32)).numpy()
        return bool(abs(variant.run(batch) - expected).max() < 1e-4)

    batch = torch.randn(4, 16)
    first = variant.run(batch)
    assert agrees(batch)
    assert agrees(batch)  # the same object again: bound already
    batch.mul_(-2)  # changed in place: the bound memory is read as it is now
    assert agrees(batch)
    assert abs(variant.run(batch) - first).max() > 1e-3
    assert agrees(batch.numpy().astype("float64"))  # a new object, converted to the model's f32
    assert agrees(torch.randn(9, 16).numpy())  # another batch size
    with pytest.raises(ValueError, match="the model takes 1 inputs, the batch has 2"):
        variant.run((batch, batch))


@openvino_required
def test_openvino_compiles_static_shapes_then_falls_back_to_dynamic(evaluator: Evaluator) -> None:
    import openvino as ov

    from pytest_modelopt.variants.openvino_runtime import ShapeCompiled

    variant = evaluator.build("openvino")
    assert variant.details["input_shapes"].startswith("static, compiled for each input shape")
    core = ov.Core()
    config = variant.loader.kwargs["config"]  # as the variant compiles (f32 under an ISA cap)
    models = ShapeCompiled(core, core.read_model(variant.files[0]), "CPU", config)
    static = [models.compiled(((size, 16),)) for size in range(1, models.MAX_STATIC_SHAPES + 1)]
    assert [c.input(0).get_partial_shape().is_static for c in static] == [True] * len(static)
    assert models.compiled(((1, 16),)) is static[0]  # compiled once per shape
    fallback = models.compiled(((99, 16),))
    assert fallback is models.compiled()
    assert fallback.input(0).get_partial_shape().is_dynamic
    request = models.bound_request([torch.ones(99, 16).numpy()])
    request.infer()
    assert request.get_output_tensor(0).data.shape[0] == 99


@openvino_required
def test_openvino_throughput_splits_a_batch_across_streams(tmp_path) -> None:
    import dataclasses

    settings = dataclasses.replace(QUICK, threads=2)
    evaluator = Evaluator(mlp_spec(), settings=settings, workdir=tmp_path)
    # Pinned to f32: this test is about the split, which bf16 rounding (the default on CPUs with
    # AVX512-BF16 or AMX) would blur.
    variant = evaluator.build("openvino_throughput", params={"inference_precision": "f32"})
    assert variant.details["performance_hint"] == "THROUGHPUT"
    assert variant.details["num_streams"] == 2
    assert variant.details["execution_precision"] == "f32"
    batch = torch.randn(7, 16)  # an odd size: the parts are uneven and must come back in order
    expected = evaluator.build("eager").run(batch).numpy()
    assert abs(variant.run(batch) - expected).max() < 1e-4


@openvino_required
def test_openvino_agrees_within_what_its_stated_precision_allows(evaluator) -> None:
    """At the device's default precision the tolerance follows what the variant states."""
    for technique in ("openvino", "openvino_throughput"):
        variant = evaluator.build(technique)
        precision = variant.details["execution_precision"]
        batch = torch.randn(7, 16, generator=torch.Generator().manual_seed(3))
        expected = evaluator.build("eager").run(batch).numpy()
        error = abs(variant.run(batch) - expected).max()
        assert error < agreement_tolerance(precision, expected), (technique, precision, error)


BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@openvino_required
@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_precision_can_be_pinned(evaluator, precision) -> None:
    hardware = evaluator.hardware
    capped_away = any(f in hardware.cpu.flags and not hardware.has_isa(f) for f in BF16_FLAGS)
    if precision == "bf16" and capped_away:  # an ISA cap forbids what this CPU has: see below
        with pytest.raises(HardwareMissing, match="forbids"):
            evaluator.build("openvino", params={"inference_precision": precision})
        return
    variant = evaluator.build("openvino", params={"inference_precision": precision})
    if precision == "bf16" and not any(hardware.has_isa(flag) for flag in BF16_FLAGS):
        # Without bf16 instructions OpenVINO runs f32 whatever it is asked: stated, not hidden.
        assert variant.details["execution_precision"] == "f32"
    else:
        assert variant.details["execution_precision"] == precision
    assert variant.precision == variant.details["execution_precision"]
    # built into a directory of its own: the default build's IR is not overwritten
    assert variant.files[0].parent != evaluator.build("openvino").files[0].parent
    assert all(path.is_file() for path in evaluator.build("openvino").files)


@openvino_required
def test_openvino_pins_f32_where_an_isa_cap_forbids_its_default(tmp_path) -> None:
    """OpenVINO's CPU plugin takes its default precision from CPUID, not from ONEDNN_MAX_CPU_ISA
    (capped to AVX2 on an AVX512-BF16 CPU it chose bf16 and returned an empty output): under a
    cap that forbids bf16 the variant pins f32 and says why, and a pinned bf16 is a skip."""
    import dataclasses

    from pytest_modelopt.hardware import detect_hardware
    from pytest_modelopt.isa_cap import IsaCap

    detected = detect_hardware()
    capped = dataclasses.replace(
        detected, isa_cap=IsaCap.from_environment({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    )
    evaluator = Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path, hardware=capped)
    variant = evaluator.build("openvino")
    assert variant.details["execution_precision"] == "f32"
    cpu_has_bf16 = any(flag in detected.cpu.flags for flag in BF16_FLAGS)
    pinned_notes = [note for note in variant.notes if "f32 execution pinned" in note]
    assert bool(pinned_notes) == cpu_has_bf16, variant.notes
    if cpu_has_bf16:
        assert "ONEDNN_MAX_CPU_ISA=AVX2" in pinned_notes[0]
        with pytest.raises(HardwareMissing, match=r"'bf16' for mlp needs avx512_bf16.*forbids"):
            evaluator.build("openvino", params={"inference_precision": "bf16"})
    else:  # nothing to forbid: the plugin runs f32 as it would anyway
        pinned = evaluator.build("openvino", params={"inference_precision": "bf16"})
        assert pinned.precision == "f32"


@openvino_required
def test_openvino_unknown_precision_is_a_clear_error(evaluator) -> None:
    with pytest.raises(
        ParameterError,
        match=r"openvino: parameter 'inference_precision' expects 'f32', 'bf16', 'f16' or None, "
        r"got 'int4' \(str\)",
    ):
        evaluator.build("openvino", params={"inference_precision": "int4"})


@openvino_required
def test_openvino_converts_from_the_onnx_export_on_request(tmp_path) -> None:
    evaluator = Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path)
    result = evaluator.evaluate("openvino_fp32", params={"source": "onnx"})
    assert result.variant.details["converted_from"] == "onnx"
    assert result.variant.details["onnx_exporter"] == "dynamo"
    assert result.accuracy["max_abs_error"] < 1e-4


@openvino_required
def test_openvino_unknown_source_is_a_clear_error(tmp_path) -> None:
    evaluator = Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path)
    with pytest.raises(
        ParameterError, match="openvino: parameter 'source' expects 'torch' or 'onnx', got 'tf'"
    ):
        evaluator.build("openvino", params={"source": "tf"})


@pytest.mark.parametrize("technique", ["onnxruntime_fp16", "tensorrt"])
def test_gpu_runtimes_skip_without_an_nvidia_gpu(technique, tmp_path) -> None:
    from pytest_modelopt.errors import HardwareMissing

    evaluator = Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path)
    if evaluator.hardware.gpus:
        pytest.skip("this machine has an NVIDIA GPU: test_gpu_runtimes_run_on_the_gpu runs")
    with pytest.raises(HardwareMissing, match=f"{technique}: needs an NVIDIA GPU"):
        evaluator.build(technique)


@onnxruntime_required
def test_fp16_conversion_keeps_fp32_io_and_agrees(evaluator: Evaluator, tmp_path) -> None:
    import numpy as np
    import onnx
    import onnxruntime

    from pytest_modelopt.variants.onnx_runtime import convert_to_fp16

    source = evaluator.build("onnxruntime")
    path = tmp_path / "fp16.onnx"
    convert_to_fp16(source.files[0], path)
    model = onnx.load(str(path))
    weights = {init.data_type for init in model.graph.initializer if len(init.dims) == 2}
    assert weights == {onnx.TensorProto.FLOAT16}
    io = [*model.graph.input, *model.graph.output]
    assert {value.type.tensor_type.elem_type for value in io} == {onnx.TensorProto.FLOAT}
    # ORT's CPU provider runs these fp16 ops too: the converted model agrees with fp32.
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(3))
    (fp16,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.abs(fp16 - source.run(x)).max() < 0.05


@onnxruntime_required
def test_tensorrt_profile_covers_every_batch_the_spec_feeds(evaluator: Evaluator) -> None:
    import onnx

    from pytest_modelopt.variants.base import BuildContext
    from pytest_modelopt.variants.ort_sessions import tensorrt_options

    path = evaluator.build("onnxruntime").files[0]
    workdir = evaluator.workdir / "trt-options"
    workdir.mkdir(exist_ok=True)
    context = BuildContext(evaluator.spec, None, workdir, evaluator.hardware)
    options = tensorrt_options(path, context)
    (name,) = [graph_input.name for graph_input in onnx.load(str(path)).graph.input]
    assert options["trt_profile_min_shapes"] == f"{name}:1x16"
    assert options["trt_profile_opt_shapes"] == f"{name}:4x16"  # the timed example batch
    assert options["trt_profile_max_shapes"] == f"{name}:256x16"  # the largest eval batch
    assert options["trt_fp16_enable"] is False  # fp16 only where a technique asks for it
    assert options["trt_engine_cache_enable"] is True
    context.params["fp16"] = True
    assert tensorrt_options(path, context)["trt_fp16_enable"] is True


@pytest.mark.modelopt_requires(gpu=True, backend="onnxruntime")
@pytest.mark.parametrize(
    ("technique", "provider", "precision"),
    [
        ("onnxruntime", None, "fp32"),
        ("onnxruntime_fp16", "CUDAExecutionProvider", "fp16"),
        ("tensorrt", "TensorrtExecutionProvider", "fp16"),
    ],
)
def test_gpu_runtimes_run_on_the_gpu(technique, provider, precision, tmp_path) -> None:
    evaluator = Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path)
    result = evaluator.evaluate(technique)
    variant = result.variant
    assert variant.device == "cuda"
    assert variant.details["io_binding"] is True
    if provider:
        assert variant.details["providers"][0] == provider
    assert variant.precision.startswith(precision)
    assert result.accuracy["top1_agreement"] >= 0.98
