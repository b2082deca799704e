"""The matrix products whose best is this machine's peak (see :mod:`pytest_modelopt.efficiency`).

Each installed runtime's n x n x n product in each precision it has kernels for, built as the
harness builds that runtime's variants (its threads, session options, performance hint), and
timed until its best call is reproduced.

Each kernel is a context manager giving the call and the kernel's name: the runtime's version and,
where the runtime says, the primitive that ran (OpenVINO's ``brgemm_avx512_bf16``). A kernel that
cannot run here raises :class:`KernelUnavailable` with the reason, and the peak is taken without
it.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import importlib.util
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_modelopt.hardware import Hardware

# The products' sizes, smallest first: a kernel goes to the next size where one call of it would
# take under STEP_SECONDS, judged from a short timing of the size below. Generous, because a
# small product's figure is fragile: two threads on a busy machine wait at every barrier, and
# torch.mm at 256 read 2.8 GOP/s where it does 140 alone.
SIZES = (256, 1024, 2048)
STEP_SECONDS = 2.0
# A kernel is timed for at least MIN_SECONDS and MIN_CALLS, until the best call is reproduced
# within STABLE in the second half of the calls, or for MAX_SECONDS.
MIN_SECONDS = 0.5
MAX_SECONDS = 3.0
MIN_CALLS = 8
STABLE = 0.03


class KernelUnavailable(Exception):
    """This runtime has no kernel for this precision here; the message says why."""


@dataclass(frozen=True)
class KernelTiming:
    """One runtime's matrix product in one precision, timed on the harness's threads."""

    runtime: str
    kernel: str
    size: int
    ops_per_s: float
    median_ops_per_s: float
    calls: int
    seconds: float
    stable: bool


def time_kernel(
    kernel: Kernel, precision: str, *, threads: int, hardware: Hardware
) -> KernelTiming:
    """Time one kernel at the largest size of SIZES whose call takes under STEP_SECONDS.

    The size is capped for a precision without fast kernels: fp16 on most CPUs runs at 1 to 3
    GOP/s, and one 2048 product would take seconds. The kernel is timed for MIN_SECONDS or more
    until its best call is reproduced. Raises KernelUnavailable.
    """
    from pytest_modelopt.measure import fixed_threads

    missing = [name for name in kernel.packages if importlib.util.find_spec(name) is None]
    if missing:
        raise KernelUnavailable(f"{', '.join(missing)} not installed")
    with fixed_threads(threads):
        size = SIZES[0]
        for following in SIZES[1:]:
            quick = _time(kernel, precision, size, threads, hardware)
            if 2 * following**3 / quick.ops_per_s > STEP_SECONDS:
                break
            size = following
        return _time(
            kernel, precision, size, threads, hardware, MIN_SECONDS, MAX_SECONDS, MIN_CALLS
        )


def _time(
    kernel: Kernel,
    precision: str,
    n: int,
    threads: int,
    hardware: Hardware,
    min_seconds: float = 0.1,
    max_seconds: float = 0.5,
    min_calls: int = 3,
) -> KernelTiming:
    with kernel.build(precision, n, threads, hardware) as (call, name):
        call()  # first call: lazy initialization, thread pools waking
        times: list[float] = []
        start = time.perf_counter()
        stable = False
        while True:
            before = time.perf_counter()
            call()
            times.append(time.perf_counter() - before)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds and len(times) >= min_calls:
                stable = min(times[len(times) // 2 :]) <= min(times) * (1 + STABLE)
                if stable:
                    break
            if elapsed >= max_seconds:
                break
    gc.collect()
    ops = 2 * n**3
    return KernelTiming(
        runtime=kernel.runtime,
        kernel=name,
        size=n,
        ops_per_s=ops / min(times),
        median_ops_per_s=ops / float(np.median(times)),
        calls=len(times),
        seconds=elapsed,
        stable=stable,
    )


# --- the kernels -------------------------------------------------------------------------------

Build = Callable[[str, int, int, Hardware], Any]


@dataclass(frozen=True)
class Kernel:
    """A runtime's n x n x n matrix product.

    ``build(precision, n, threads, hardware)`` is a context manager giving ``(call, name)``: the
    call, checked once to return an n x n result, and the kernel's name (the runtime's version,
    and the primitive it ran where it says).
    """

    runtime: str
    name: str
    precisions: tuple[str, ...]
    build: Build
    packages: tuple[str, ...] = ()


def _check_shape(shape: Any, n: int, name: str) -> None:
    if tuple(shape) != (n, n):  # OpenVINO under an ISA cap returned empty outputs
        raise KernelUnavailable(f"{name} returned shape {tuple(shape)}, not ({n}, {n})")


def _torch_version() -> str:
    import torch

    return f"torch {torch.__version__.split('+')[0]}"


@contextmanager
def _torch_mm(precision: str, n: int, threads: int, hardware: Hardware) -> Iterator[Any]:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    backend = "MKL" if precision == "fp32" and torch.backends.mkl.is_available() else "ATen/oneDNN"
    try:
        _check_shape(torch.mm(a, b).shape, n, "torch.mm")
    except RuntimeError as error:  # no kernel for this dtype on this device
        raise KernelUnavailable(str(error).splitlines()[0]) from error
    yield (lambda: torch.mm(a, b)), f"{_torch_version()} torch.mm {precision} ({backend})"


@contextmanager
def _torch_onednn_linear(precision: str, n: int, threads: int, hardware: Hardware) -> Iterator[Any]:
    """Give a call of oneDNN's Linear with a prepacked weight.

    What inductor's freezing runs (torch.compile, PT2E), and the kind of oneDNN kernel
    TorchScript's frozen convolutions use.
    """
    import torch

    if not torch.backends.mkldnn.is_available():
        raise KernelUnavailable("torch was built without oneDNN")
    if precision == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise KernelUnavailable("oneDNN has no bf16 kernel on this CPU")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    x, w = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, n)

        def call() -> Any:
            return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")

        _check_shape(call().shape, n, "mkldnn._linear_pointwise")
    except RuntimeError as error:
        raise KernelUnavailable(str(error).splitlines()[0]) from error
    yield call, f"{_torch_version()} mkldnn._linear_pointwise {precision} (oneDNN, packed weight)"


@contextmanager
def _torch_quantized_linear(
    precision: str, n: int, threads: int, hardware: Hardware
) -> Iterator[Any]:
    """Give a call of the quantized engine's Linear (fbgemm/x86 or qnnpack).

    The integer kernels that torch's int8 variants run. ``torch._int_mm`` is a reference loop on
    CPUs, many times slower.
    """
    import torch

    engine = torch.backends.quantized.engine
    if engine == "none":
        raise KernelUnavailable("torch has no quantized engine here")
    with warnings.catch_warnings():  # torch 2.14 deprecates quantized tensors, fbgemm still runs
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        activations = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 64, torch.quint8)
        weight = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(weight, None)

    def call() -> Any:
        return torch.ops.quantized.linear(activations, packed, 0.1, 64)

    _check_shape(call().shape, n, "quantized.linear")
    yield call, f"{_torch_version()} quantized.linear int8 ({engine} engine)"


@contextmanager
def _onnxruntime_op(
    op: str, precision: str, n: int, threads: int, hardware: Hardware
) -> Iterator[Any]:
    """Give a call of ONNX Runtime's CPU provider (MLAS) running ``op`` on a constant weight.

    ORT prepacks the constant weight; the session is configured as the harness's ONNX Runtime
    variants are: ``MatMul`` in fp32, ``MatMulInteger`` and ``QLinearMatMul`` (uint8
    activations, int8 weights, as ORT's static int8 runs) in int8.
    """
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from pytest_modelopt.variants.onnx_runtime import make_session

    rng = np.random.default_rng(0)
    x: np.ndarray
    weight: np.ndarray
    if op == "MatMul":
        x = rng.standard_normal((n, n), dtype=np.float32)
        weight = rng.standard_normal((n, n), dtype=np.float32)
        types = (TensorProto.FLOAT, TensorProto.FLOAT)
        extra: list[tuple[str, Any]] = []
    else:
        x = rng.integers(0, 256, (n, n), dtype=np.uint8)
        weight = rng.integers(-127, 128, (n, n), dtype=np.int8)
        types = (TensorProto.UINT8, TensorProto.INT32)
        extra = []
        if op == "QLinearMatMul":
            types = (TensorProto.UINT8, TensorProto.UINT8)
            extra = [
                ("x_scale", np.float32(0.05)),
                ("x_zero", np.uint8(128)),
                ("w_scale", np.float32(0.05)),
                ("w_zero", np.int8(0)),
                ("y_scale", np.float32(0.1)),
                ("y_zero", np.uint8(128)),
            ]
    inputs = ["x", *[name for name, _ in extra[:2]], "w", *[name for name, _ in extra[2:]]]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"])],
        "peak",
        [helper.make_tensor_value_info("x", types[0], [n, n])],
        [helper.make_tensor_value_info("y", types[1], [n, n])],
        [
            numpy_helper.from_array(weight, "w"),
            *(numpy_helper.from_array(np.asarray(value), name) for name, value in extra),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory(prefix="modelopt-peak-") as folder:
        path = Path(folder) / "peak.onnx"
        onnx.save(model, str(path))
        try:
            session = make_session(str(path), threads, ["CPUExecutionProvider"])
            shape = session.run(None, {"x": x})[0].shape
        except Exception as error:  # ORT raises its own exception types for a missing kernel
            raise KernelUnavailable(str(error).splitlines()[0][:200]) from error
        _check_shape(shape, n, f"onnxruntime {op}")

        def call() -> Any:
            return session.run(None, {"x": x})

        yield call, f"onnxruntime {onnxruntime.__version__} {op} {precision} (MLAS, CPU provider)"


# OpenVINO's execution precision hint for each peak precision, and the precisions its chosen
# kernel must report running in.
_OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
_OPENVINO_RUNTIME = {"fp32": {"f32"}, "bf16": {"bf16"}, "fp16": {"f16"}, "int8": {"u8", "i8"}}


@contextmanager
def _openvino_matmul(
    constant_weight: bool, precision: str, n: int, threads: int, hardware: Hardware
) -> Iterator[Any]:
    """Give a call of a matrix product compiled by OpenVINO's CPU plugin.

    It is compiled as the harness's OpenVINO variants are (LATENCY hint, the harness's threads,
    the execution precision pinned). A constant weight makes a FullyConnected node (MLAS in fp32
    here, oneDNN brgemm in bf16 and int8); two inputs a oneDNN MatMul. int8 is a MatMul between
    FakeQuantize nodes, which the plugin runs as an integer kernel; the kernel's reported runtime
    precision is checked, so an f32 fallback never sets an int8 or bf16 peak.
    """
    import openvino as ov
    from openvino import opset13 as ops

    from pytest_modelopt.variants.openvino import PRECISION_FLAGS

    needs = PRECISION_FLAGS.get(_OPENVINO_HINTS[precision] if precision != "fp16" else "f16", ())
    if needs and not any(hardware.has_isa(flag) for flag in needs):
        raise KernelUnavailable(
            f"OpenVINO runs {precision} on {' or '.join(needs)}, which this CPU lacks or the ISA "
            "cap forbids"
        )
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((n, n), dtype=np.float32)]
    x = ops.parameter([n, n], ov.Type.f32, name="x")
    parameters = [x]
    if constant_weight:
        weight: Any = ops.constant(rng.standard_normal((n, n), dtype=np.float32))
    else:
        weight = ops.parameter([n, n], ov.Type.f32, name="w")
        parameters.append(weight)
        arrays.append(rng.standard_normal((n, n), dtype=np.float32))
    left: Any = x
    if precision == "int8":
        low, high = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
        left = ops.fake_quantize(x, low, high, low, high, 256)
        weight = ops.fake_quantize(weight, low, high, low, high, 255)
    model = ov.Model([ops.matmul(left, weight, False, False)], parameters, "peak")
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": _OPENVINO_HINTS[precision],
    }
    try:
        compiled = ov.Core().compile_model(model, "CPU", config)
    except Exception as error:  # OpenVINO raises plain RuntimeErrors and its own types
        raise KernelUnavailable(str(error).splitlines()[0][:200]) from error
    layer, primitive, runtime = _openvino_product_node(compiled)
    if runtime not in _OPENVINO_RUNTIME[precision]:
        raise KernelUnavailable(f"OpenVINO ran the product as {primitive} in {runtime}")
    request = compiled.create_infer_request()
    for index, array in enumerate(arrays):
        request.set_input_tensor(index, ov.Tensor(array, shared_memory=True))
    request.infer()
    _check_shape(request.get_output_tensor(0).shape, n, f"OpenVINO {layer}")
    version = importlib.metadata.version("openvino")
    yield request.infer, f"openvino {version} {layer} {precision} ({primitive})"
    del request, compiled


def _openvino_product_node(compiled: Any) -> tuple[str, str, str]:
    """Return the executed matrix product's layer type, primitive and runtime precision."""
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = str(info["layerType"].value) if "layerType" in info else ""
        if layer in {"FullyConnected", "MatMul"}:
            primitive = str(info["primitiveType"].value) if "primitiveType" in info else "?"
            runtime = str(info["runtimePrecision"].value).strip().lower()
            return layer, primitive, runtime
    raise KernelUnavailable("OpenVINO's compiled graph has no FullyConnected or MatMul node")


KERNELS = (
    Kernel("torch", "torch.mm", ("fp32", "bf16", "fp16"), _torch_mm, ("torch",)),
    Kernel("torch", "mkldnn._linear_pointwise", ("fp32", "bf16"), _torch_onednn_linear, ("torch",)),
    Kernel("torch", "quantized.linear", ("int8",), _torch_quantized_linear, ("torch",)),
    *(
        Kernel(
            "onnxruntime",
            op,
            precisions,
            functools.partial(_onnxruntime_op, op),
            ("onnxruntime", "onnx"),
        )
        for op, precisions in (
            ("MatMul", ("fp32",)),
            ("MatMulInteger", ("int8",)),
            ("QLinearMatMul", ("int8",)),
        )
    ),
    Kernel(
        "openvino",
        "MatMul, constant weight",
        ("fp32", "bf16", "fp16", "int8"),
        functools.partial(_openvino_matmul, True),
        ("openvino",),
    ),
    Kernel(
        "openvino",
        "MatMul, two inputs",
        ("fp32", "bf16", "fp16"),
        functools.partial(_openvino_matmul, False),
        ("openvino",),
    ),
)
