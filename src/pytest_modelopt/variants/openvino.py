"""OpenVINO variants: default execution precision, forced fp32, NNCF int8, and throughput.

Every variant converts the model (from torch by default; ``params={"source": "onnx"}`` converts
the ONNX export instead), compiles it for the best device with a performance hint, saves the IR
that was compiled, and reads back from the compiled model how it runs: device, hint, threads,
streams and execution precision.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pytest_modelopt.errors import BuildError, HardwareMissing
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes

Source = Literal["torch", "onnx"]
SOURCES: tuple[str, ...] = get_args(Source)
# Execution precisions a technique may be pinned to; None keeps the device's default (bf16 on CPUs
# with AMX or AVX512-BF16, f32 elsewhere).
Precision = Literal["f32", "bf16", "f16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
# The CPU flags a reduced execution precision runs on. OpenVINO's CPU plugin takes its default
# precision from CPUID, not from ONEDNN_MAX_CPU_ISA: capped to AVX2 on an AVX512-BF16 EPYC it
# still chose bf16, ran oneDNN's reference kernels and returned an empty (0, 10) output (OpenVINO
# 2026.4). So where a cap forbids these flags, the device's default is replaced by f32.
PRECISION_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "f16": ("avx512_fp16", "amx_fp16")}


@dataclass(frozen=True)
class ConversionParams:
    """Parameters of ``openvino_fp32``, and of every OpenVINO technique: where to convert from."""

    # Every OpenVINO technique converts from the torch model unless told to convert its ONNX export.
    source: Source = param(
        "torch", 'convert from the torch module (`"torch"`) or from its ONNX export (`"onnx"`)'
    )


@dataclass(frozen=True)
class PrecisionParams(ConversionParams):
    """Parameters of ``openvino``, ``openvino_int8`` and ``openvino_throughput``."""

    inference_precision: Precision | None = param(
        None,
        'pin the execution precision (`"f32"`, `"bf16"`, `"f16"`); `None` keeps the '
        "device's default, bf16 on CPUs with AMX or AVX512-BF16. The variant states the "
        'precision it ran (`details["execution_precision"]`)',
    )


def convert(ctx: BuildContext) -> tuple[Any, dict[str, Any], list[str]]:
    """``ov.convert_model`` from the torch model or from its ONNX export (``source`` param)."""
    import openvino as ov

    source = ctx.params.get("source", "torch")
    if source not in SOURCES:
        raise BuildError(
            f"OpenVINO source {source!r} for {ctx.spec.name}: choose one of {', '.join(SOURCES)}"
        )
    details: dict[str, Any] = {"converted_from": source}
    notes: list[str] = []
    with WarningsToNotes() as recorded:
        if source == "onnx":
            from pytest_modelopt.variants.onnx_runtime import export_onnx

            path, export_details, notes = export_onnx(ctx)
            details["onnx_exporter"] = export_details["exporter"]
            model = ov.convert_model(str(path))
        else:
            model = ov.convert_model(ctx.model.eval(), example_input=ctx.spec.example_input)
    return model, details, notes + recorded.notes[:3]


def openvino_variant(
    ctx: BuildContext,
    technique: str,
    *,
    precision_hint: str | None = None,
    hint: str = "LATENCY",
    quantize: bool = False,
) -> Variant:
    """Convert, optionally quantize with NNCF, compile with ``hint``, save the IR.

    The execution precision is read back from the compiled model: on CPUs with AMX or AVX512-BF16
    OpenVINO runs bf16 by default, which changes both speed and accuracy, so it is always stated.
    """
    import openvino as ov

    from pytest_modelopt.worker import Loader

    precision_hint = precision_hint or _pinned_precision(ctx, technique)
    model, details, notes = convert(ctx)
    if quantize:
        model = nncf_quantize(ctx, technique, model)
    core = ov.Core()
    device = "GPU" if ctx.hardware.gpus and "GPU" in core.available_devices else "CPU"
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
    if ctx.threads and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = ctx.threads
    if device == "CPU":
        precision_hint = _precision_the_cap_allows(ctx, core, technique, precision_hint, notes)
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    models = ShapeCompiled(core, model, device, config)
    example_shapes = tuple(tuple(item.shape) for item in _inputs(ctx.spec.example_input))
    try:
        compiled = models.compiled(None if hint == "THROUGHPUT" else example_shapes)
    except Exception as error:  # OpenVINO raises plain RuntimeErrors and its own types
        raise BuildError(
            f"{technique}: OpenVINO could not compile {ctx.spec.name} for {device}: "
            f"{_first_line(error)}"
        ) from error
    execution_precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    xml = ctx.workdir / "model.xml"
    # Weights kept as they are on disk (fp32, or int8 after NNCF): the size is then comparable
    # with the reference's; OpenVINO's default fp16 compression of the IR is a separate choice.
    ov.save_model(model, str(xml), compress_to_fp16=False)
    streams = int(compiled.get_property("NUM_STREAMS"))
    run = runner(models)
    kernels = runtime_precisions(compiled)
    precision = execution_precision
    if quantize:
        precision = f"int8 ({kernels.get('i8', 0) + kernels.get('u8', 0)} int8 kernels), " + (
            f"{execution_precision} elsewhere"
        )
    return Variant(
        technique,
        run,
        (xml, xml.with_suffix(".bin")),
        runtime=f"openvino {ov.get_version()}",
        precision=precision,
        device=device.lower(),
        details={
            "device": device,
            "performance_hint": hint,
            "inference_num_threads": compiled.get_property("INFERENCE_NUM_THREADS"),
            "num_streams": streams,
            "execution_precision": execution_precision,
            "input_shapes": _shapes_used(models, hint),
            "kernel_precisions": kernels,
            **details,
        },
        notes=notes,
        loader=Loader(
            "pytest_modelopt.variants.openvino:openvino_runner",
            {"xml": str(xml), "device": device, "config": config},
            numpy_inputs=True,
        ),
        profiler=Loader(
            "pytest_modelopt.variants.openvino:openvino_profiler",
            {"xml": str(xml), "device": device, "config": config},
        ),
    )


def nncf_quantize(ctx: BuildContext, technique: str, model: Any) -> Any:
    """NNCF post-training quantization of an OpenVINO model on the spec's calibration data."""
    import nncf

    if not ctx.spec.calibration_data:
        raise BuildError(
            f"{technique} needs calibration data: give ModelSpec {ctx.spec.name!r} "
            "calibration_data (a few representative batches)"
        )

    def as_numpy(batch: Any) -> Any:
        items = batch if isinstance(batch, tuple) else (batch,)
        return [item.numpy() if hasattr(item, "numpy") else item for item in items]

    batches = list(ctx.spec.calibration_data)
    ctx.log(f"{ctx.spec.name}[{technique}]: NNCF quantization on {len(batches)} batches")
    # NNCF draws progress bars on stdout: the harness's log says what happens instead.
    with WarningsToNotes(), contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(
            model,
            nncf.Dataset(batches, as_numpy),
            subset_size=len(batches),
            preset=nncf.QuantizationPreset.PERFORMANCE,
        )


def runtime_precisions(compiled: Any) -> dict[str, int]:
    """How many of the compiled graph's executed nodes run in each precision (``f32``, ``i8``)."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info and op.get_type_name() not in {"Parameter", "Result"}:
            counts[str(info["runtimePrecision"].value).strip().lower()] += 1
    return dict(sorted(counts.items()))


def openvino_runner(xml: str, device: str, config: dict[str, Any]) -> Callable[[Any], Any]:
    """``run(batch)`` of the saved IR compiled with ``config``: a worker process's loader."""
    import openvino as ov

    core = ov.Core()
    return runner(ShapeCompiled(core, core.read_model(xml), device, config))


def openvino_profiler(
    xml: str, device: str, config: dict[str, Any]
) -> Callable[[Any, int], dict[str, float]]:
    """Return the variant's ``profiler``: ``profile(batch, calls)``, ms per call by operator.

    Milliseconds per call by layer type and kernel (``Convolution (brgconv_avx2_FP32)``: a change
    of kernel shows as one row leaving and another coming) of the saved IR compiled with
    ``config`` and ``PERF_COUNT``, one request on the whole batch (a THROUGHPUT variant too),
    summed over the calls.
    """

    def profile(batch: Any, calls: int) -> dict[str, float]:
        import openvino as ov

        from pytest_modelopt.profiling import WARMUP_CALLS, per_call

        core = ov.Core()
        models = ShapeCompiled(core, core.read_model(xml), device, {**config, "PERF_COUNT": True})
        request = models.bound_request(_inputs(batch))
        for _ in range(WARMUP_CALLS):
            request.infer()
        totals: Counter[str] = Counter()
        for _ in range(calls):
            request.infer()  # the counters are those of the last inference
            for layer in request.get_profiling_info():
                if layer.status == ov.ProfilingInfo.Status.EXECUTED:
                    name = f"{layer.node_type} ({layer.exec_type})"
                    totals[name] += layer.real_time.total_seconds() * 1e3
        return per_call(totals, calls)

    return profile


class ShapeCompiled:
    """A model compiled once for each input shape it is called with, as an expert deploys it.

    OpenVINO's CPU plugin runs a static-shape compilation faster than the same model with dynamic
    dimensions (mobilenetv3_small_100, 2 cores, ``benchmark_app``: 1.31-1.41 ms static against
    1.46-1.62 ms dynamic), and the converted model has a dynamic batch. Past ``MAX_STATIC_SHAPES``
    shapes, or where a shape cannot be made static, calls run on the dynamic compilation.
    """

    MAX_STATIC_SHAPES = 8

    def __init__(self, core: Any, model: Any, device: str, config: dict[str, Any]) -> None:
        self.core, self.model, self.device, self.config = core, model, device, config
        self.dtypes = [port.get_element_type().to_dtype() for port in model.inputs]
        self.static_failure: str | None = None  # why static shapes could not be used, if so
        self._compiled: dict[Any, Any] = {}  # input shapes (None: dynamic) -> compiled model
        self._requests: dict[int, Any] = {}  # id of a compiled model -> its request

    def compiled(self, shapes: tuple[tuple[int, ...], ...] | None = None) -> Any:
        """Return the compilation for ``shapes``, compiling it on first use.

        The dynamic one for ``None``, past the static limit, or once a static compilation has
        failed.
        """
        if shapes is not None and shapes not in self._compiled and self._static_allowed():
            try:
                self._compiled[shapes] = self._compile_static(shapes)
            except Exception as error:  # OpenVINO raises plain RuntimeErrors
                self.static_failure = _first_line(error)
        if shapes not in self._compiled:
            shapes = None
            if None not in self._compiled:
                self._compiled[None] = self.core.compile_model(self.model, self.device, self.config)
        return self._compiled[shapes]

    def _static_allowed(self) -> bool:
        static = sum(shapes is not None for shapes in self._compiled)
        return not self.static_failure and static < self.MAX_STATIC_SHAPES

    def bound_request(self, arrays: list[Any]) -> Any:
        """Return a request of the compilation for these arrays' shapes, bound to the arrays.

        It reads them without a copy (a converted copy where the dtype differs: the tensor keeps
        it alive).
        """
        import numpy as np
        import openvino as ov

        if len(arrays) != len(self.dtypes):
            raise ValueError(
                f"the model takes {len(self.dtypes)} inputs, the batch has {len(arrays)}"
            )
        arrays = [
            np.ascontiguousarray(a, dtype=d) for a, d in zip(arrays, self.dtypes, strict=True)
        ]
        compiled = self.compiled(tuple(array.shape for array in arrays))
        request = self._requests.get(id(compiled))
        if request is None:
            request = self._requests[id(compiled)] = compiled.create_infer_request()
        for index, array in enumerate(arrays):
            request.set_input_tensor(index, ov.Tensor(array, shared_memory=True))
        return request

    def _compile_static(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        import openvino as ov

        static = self.model.clone()
        static.reshape({index: ov.PartialShape(list(shape)) for index, shape in enumerate(shapes)})
        return self.core.compile_model(static, self.device, self.config)


def runner(models: ShapeCompiled) -> Callable[[Any], Any]:
    """Run one batch: a single request (LATENCY), or split across streams (THROUGHPUT)."""
    if models.config.get("PERFORMANCE_HINT") == "THROUGHPUT":
        compiled = models.compiled()
        return _throughput_runner(compiled, int(compiled.get_property("NUM_STREAMS")))
    return _latency_runner(models)


def _latency_runner(models: ShapeCompiled) -> Callable[[Any], Any]:
    """One synchronous request whose inputs are bound once, as OpenVINO's ``benchmark_app`` does.

    ``request.infer(arrays)`` copies every input on every call (0.1 ms of a 1.4 ms mobilenetv3
    call on 2 cores); binding the caller's arrays as shared-memory tensors avoids the copy, and
    they are rebound only when the caller passes other objects or reshaped ones. Shared memory
    means an array changed in place is read as changed, as with any zero-copy runtime.
    """
    bound: list[tuple[Any, tuple[int, ...]]] = []  # the caller's objects, with their shapes
    current: list[Any] = []  # the request reading them

    def run(batch: Any) -> Any:
        items = list(batch) if isinstance(batch, tuple) else [batch]
        if [(id(item), _shape(item)) for item in items] != [(id(i), s) for i, s in bound]:
            current[:] = [models.bound_request(_inputs(batch))]
            bound[:] = [(item, _shape(item)) for item in items]
        (request,) = current
        request.infer()
        return request.get_output_tensor(0).data.copy()

    return run


def _shape(item: Any) -> tuple[int, ...]:
    return tuple(getattr(item, "shape", ()))


def _throughput_runner(compiled: Any, streams: int) -> Callable[[Any], Any]:
    """Split the batch across the compiled model's streams, run the parts in parallel."""
    import numpy as np
    import openvino as ov

    queue = ov.AsyncInferQueue(compiled, streams)
    results: dict[int, Any] = {}

    def done(request: Any, index: int) -> None:
        results[index] = request.get_output_tensor(0).data.copy()

    queue.set_callback(done)

    def run(batch: Any) -> Any:
        inputs = _inputs(batch)
        parts = min(streams, len(inputs[0]))
        pieces = [np.array_split(item, parts) for item in inputs]
        results.clear()
        for index in range(parts):
            queue.start_async([piece[index] for piece in pieces], index, share_inputs=True)
        queue.wait_all()
        return np.concatenate([results[index] for index in range(parts)])

    return run


def _inputs(batch: Any) -> list[Any]:
    items = batch if isinstance(batch, tuple) else (batch,)
    return [item.numpy() if hasattr(item, "numpy") else item for item in items]


def _pinned_precision(ctx: BuildContext, technique: str) -> str | None:
    """Return the ``inference_precision`` parameter, checked: None keeps the device's default."""
    pinned = ctx.params.get("inference_precision")
    if pinned is not None and pinned not in PRECISIONS:
        raise BuildError(
            f"{technique}: inference_precision {pinned!r} for {ctx.spec.name}: choose one of "
            f"{', '.join(PRECISIONS)}, or None for the device's default"
        )
    return str(pinned) if pinned else None


@register_technique(
    "openvino",
    params=PrecisionParams,
    backend="openvino",
    description="OpenVINO, LATENCY hint, the device's default execution precision (stated)",
)
def build_openvino(ctx: BuildContext) -> Variant:
    """Compile for OpenVINO (LATENCY hint) at the device's default execution precision, stated."""
    return openvino_variant(ctx, "openvino")


@register_technique(
    "openvino_fp32",
    params=ConversionParams,
    backend="openvino",
    description="OpenVINO, LATENCY hint, execution forced to fp32",
)
def build_openvino_fp32(ctx: BuildContext) -> Variant:
    """Compile for OpenVINO (LATENCY hint) with execution forced to fp32."""
    return openvino_variant(ctx, "openvino_fp32", precision_hint="f32")


@register_technique(
    "openvino_int8",
    params=PrecisionParams,
    backend=("openvino", "nncf"),
    description="OpenVINO with NNCF post-training int8 quantization on the calibration data",
)
def build_openvino_int8(ctx: BuildContext) -> Variant:
    """Quantize to int8 with NNCF on the calibration data, then compile for OpenVINO."""
    return openvino_variant(ctx, "openvino_int8", quantize=True)


@register_technique(
    "openvino_throughput",
    params=PrecisionParams,
    backend="openvino",
    description="OpenVINO, THROUGHPUT hint: the batch split across parallel streams",
)
def build_openvino_throughput(ctx: BuildContext) -> Variant:
    """Compile for OpenVINO with the THROUGHPUT hint: the batch split across parallel streams."""
    return openvino_variant(ctx, "openvino_throughput", hint="THROUGHPUT")


def _shapes_used(models: ShapeCompiled, hint: str) -> str:
    if hint == "THROUGHPUT":
        return "dynamic (the batch is split into parts of varying size)"
    if models.static_failure:
        return f"dynamic (static shapes failed: {models.static_failure})"
    return f"static, compiled for each input shape (up to {models.MAX_STATIC_SHAPES}, then dynamic)"


def _precision_the_cap_allows(
    ctx: BuildContext, core: Any, technique: str, pinned: str | None, notes: list[str]
) -> str | None:
    """Return the precision to pin on the CPU, as far as an ISA cap allows.

    ``pinned``, unless an ISA cap forbids the instructions it needs (a skip: the plugin would run
    it anyway, outside the cap), or f32 where the cap forbids the plugin's default (see
    PRECISION_FLAGS); None keeps the default.
    """
    cap = ctx.hardware.isa_cap
    if cap is None:
        return pinned
    precision = pinned or _type_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
    needs = PRECISION_FLAGS.get(precision, ())
    forbidden = [flag for flag in needs if flag in ctx.hardware.cpu.flags]
    if not forbidden or any(ctx.hardware.has_isa(flag) for flag in needs):
        return pinned  # allowed, or a CPU without it: the plugin then runs f32 and says so
    if pinned:
        raise HardwareMissing(
            f"{technique}: inference_precision {pinned!r} for {ctx.spec.name} needs "
            f"{' or '.join(forbidden)}, which the ISA cap ({cap.describe()}) forbids; OpenVINO "
            "would run it outside the cap. Pin f32, or lift the cap"
        )
    notes.append(
        f"{technique}: f32 execution pinned: the CPU plugin's default here is {precision}, whose "
        f"instructions the ISA cap ({cap.describe()}) forbids, and OpenVINO does not apply the "
        "cap to its choice of precision"
    )
    return "f32"


def _type_name(element_type: Any) -> str:
    """OpenVINO's element type as its short name (``f32``, ``bf16``, ``f16``)."""
    to_string = getattr(element_type, "to_string", None)
    return str(to_string() if to_string else element_type)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__
