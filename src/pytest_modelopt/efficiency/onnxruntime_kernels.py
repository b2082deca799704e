"""ONNX Runtime's peak kernels: one-node graphs on its CPU provider (MLAS), as its variants run.

Each graph holds one operator with a constant weight, which ORT prepacks, in a session configured
as the harness's ONNX Runtime variants are: ``MatMul`` and ``Conv`` in fp32; ``MatMulInteger``,
``QLinearMatMul`` and ``QLinearConv`` (uint8 activations, int8 weights, as ORT's static int8
runs) in int8.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pytest_modelopt.efficiency.timing import (
    CONVOLUTION,
    MATRIX_PRODUCT,
    Kernel,
    KernelUnavailable,
    check_shape,
    convolution_shape,
)
from pytest_modelopt.hardware import Hardware

_CONVOLUTIONS = {"Conv", "QLinearConv"}
_FLOAT = {"MatMul", "Conv"}
# The quantization parameters of the QLinear operators, in their input order around x and w.
_ACTIVATION_QUANTIZATION = (("x_scale", np.float32(0.05)), ("x_zero", np.uint8(128)))
_WEIGHT_QUANTIZATION = (
    ("w_scale", np.float32(0.05)),
    ("w_zero", np.int8(0)),
    ("y_scale", np.float32(0.1)),
    ("y_zero", np.uint8(128)),
)


@contextmanager
def _onnxruntime_op(
    op: str, precision: str, size: int, threads: int, hardware: Hardware
) -> Iterator[Any]:
    """Give a call of ONNX Runtime's CPU provider running ``op`` on a constant weight."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from pytest_modelopt.variants.ort_sessions import make_session

    x_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    if op in _CONVOLUTIONS:
        x_shape = output_shape = convolution_shape(size)
        weight_shape: tuple[int, ...] = (size, size, 3, 3)
        attributes: dict[str, Any] = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    else:
        x_shape = output_shape = weight_shape = (size, size)
        attributes = {}
    rng = np.random.default_rng(0)
    x: np.ndarray
    weight: np.ndarray
    before_weight: tuple[tuple[str, Any], ...] = ()
    after_weight: tuple[tuple[str, Any], ...] = ()
    if op in _FLOAT:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        weight = rng.standard_normal(weight_shape, dtype=np.float32)
        types = (TensorProto.FLOAT, TensorProto.FLOAT)
    else:
        x = rng.integers(0, 256, x_shape, dtype=np.uint8)
        weight = rng.integers(-127, 128, weight_shape, dtype=np.int8)
        types = (TensorProto.UINT8, TensorProto.INT32)  # MatMulInteger's int32 accumulators
        if op.startswith("QLinear"):
            types = (TensorProto.UINT8, TensorProto.UINT8)
            before_weight, after_weight = _ACTIVATION_QUANTIZATION, _WEIGHT_QUANTIZATION
    constants = (*before_weight, ("w", weight), *after_weight)
    graph = helper.make_graph(
        [helper.make_node(op, ["x", *(name for name, _ in constants)], ["y"], **attributes)],
        "peak",
        [helper.make_tensor_value_info("x", types[0], list(x_shape))],
        [helper.make_tensor_value_info("y", types[1], list(output_shape))],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in constants],
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
        check_shape(shape, output_shape, f"onnxruntime {op}")

        def call() -> Any:
            return session.run(None, {"x": x})

        yield call, f"onnxruntime {onnxruntime.__version__} {op} {precision} (MLAS, CPU provider)"


KERNELS = tuple(
    Kernel(
        "onnxruntime",
        op,
        precisions,
        functools.partial(_onnxruntime_op, op),
        ("onnxruntime", "onnx"),
        CONVOLUTION if op in _CONVOLUTIONS else MATRIX_PRODUCT,
    )
    for op, precisions in (
        ("MatMul", ("fp32",)),
        ("MatMulInteger", ("int8",)),
        ("QLinearMatMul", ("int8",)),
        ("Conv", ("fp32",)),
        ("QLinearConv", ("int8",)),
    )
)
