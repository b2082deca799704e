"""OpenVINO's peak kernels: one-operation models compiled by its CPU plugin, as its variants are.

Each is compiled with the LATENCY hint, the harness's threads and the execution precision pinned.
int8 is the operation between FakeQuantize nodes, which the plugin runs as an integer kernel. The
executed node's reported runtime precision is checked, so an f32 fallback never sets an int8 or
bf16 peak.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from pytest_modelopt.efficiency.timing import (
    CONVOLUTION,
    Kernel,
    KernelUnavailable,
    check_shape,
    convolution_shape,
)
from pytest_modelopt.hardware import Hardware

# OpenVINO's execution precision hint for each peak precision, and the precisions its chosen
# kernel must report running in.
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
_RUNTIME_PRECISIONS = {"fp32": {"f32"}, "bf16": {"bf16"}, "fp16": {"f16"}, "int8": {"u8", "i8"}}


def _quantized(node: Any, levels: int) -> Any:
    from openvino import opset13 as ops

    low, high = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
    return ops.fake_quantize(node, low, high, low, high, levels)


@contextmanager
def _openvino_matmul(
    constant_weight: bool, precision: str, n: int, threads: int, hardware: Hardware
) -> Iterator[Any]:
    """Give a call of a compiled matrix product.

    A constant weight makes a FullyConnected node (MLAS in fp32 here, oneDNN brgemm in bf16 and
    int8); two inputs a oneDNN MatMul.
    """
    import openvino as ov
    from openvino import opset13 as ops

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
        left, weight = _quantized(x, 256), _quantized(weight, 255)
    model = ov.Model([ops.matmul(left, weight, False, False)], parameters, "peak")
    with _compiled(model, arrays, precision, threads, hardware, (n, n)) as compiled:
        yield compiled


@contextmanager
def _openvino_convolution(
    precision: str, channels: int, threads: int, hardware: Hardware
) -> Iterator[Any]:
    """Give a call of a compiled 3x3 convolution with a constant weight (oneDNN's kernels)."""
    import openvino as ov
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    shape = convolution_shape(channels)
    x = ops.parameter(list(shape), ov.Type.f32, name="x")
    weight: Any = ops.constant(rng.standard_normal((channels, channels, 3, 3), dtype=np.float32))
    data: Any = x
    if precision == "int8":
        data, weight = _quantized(x, 256), _quantized(weight, 255)
    convolution = ops.convolution(data, weight, [1, 1], [1, 1], [1, 1], [1, 1])
    model = ov.Model([convolution], [x], "peak")
    arrays = [rng.standard_normal(shape, dtype=np.float32)]
    with _compiled(model, arrays, precision, threads, hardware, shape) as compiled:
        yield compiled


@contextmanager
def _compiled(
    model: Any,
    arrays: list[np.ndarray],
    precision: str,
    threads: int,
    hardware: Hardware,
    output_shape: tuple[int, ...],
) -> Iterator[Any]:
    """Compile a one-operation model and give its call and the executed kernel's name."""
    import openvino as ov

    from pytest_modelopt.variants.openvino import PRECISION_FLAGS

    needs = PRECISION_FLAGS.get(_HINTS[precision], ())
    if needs and not any(hardware.has_isa(flag) for flag in needs):
        raise KernelUnavailable(
            f"OpenVINO runs {precision} on {' or '.join(needs)}, which this CPU lacks or the ISA "
            "cap forbids"
        )
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
    }
    try:
        compiled = ov.Core().compile_model(model, "CPU", config)
    except Exception as error:  # OpenVINO raises plain RuntimeErrors and its own types
        raise KernelUnavailable(str(error).splitlines()[0][:200]) from error
    layer, primitive, runtime = _executed_node(compiled)
    if runtime not in _RUNTIME_PRECISIONS[precision]:
        raise KernelUnavailable(f"OpenVINO ran the {layer} as {primitive} in {runtime}")
    request = compiled.create_infer_request()
    for index, array in enumerate(arrays):
        request.set_input_tensor(index, ov.Tensor(array, shared_memory=True))
    request.infer()
    check_shape(request.get_output_tensor(0).shape, output_shape, f"OpenVINO {layer}")
    version = importlib.metadata.version("openvino")
    yield request.infer, f"openvino {version} {layer} {precision} ({primitive})"
    del request, compiled


_COMPUTE_LAYERS = {"FullyConnected", "MatMul", "Convolution"}


def _executed_node(compiled: Any) -> tuple[str, str, str]:
    """Return the executed operation's layer type, primitive and runtime precision."""
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = str(info["layerType"].value) if "layerType" in info else ""
        if layer in _COMPUTE_LAYERS:
            primitive = str(info["primitiveType"].value) if "primitiveType" in info else "?"
            runtime = str(info["runtimePrecision"].value).strip().lower()
            return layer, primitive, runtime
    raise KernelUnavailable(
        f"OpenVINO's compiled graph has no {', '.join(sorted(_COMPUTE_LAYERS))} node"
    )


KERNELS = (
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
    Kernel(
        "openvino",
        "Convolution",
        ("fp32", "bf16", "int8"),
        _openvino_convolution,
        ("openvino",),
        CONVOLUTION,
    ),
)
