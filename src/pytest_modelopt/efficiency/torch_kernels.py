"""torch's peak kernels: its matrix products and convolutions, as its variants run them.

Eager fp32 products run MKL (``torch.mm``); frozen graphs (inductor's freezing, TorchScript's
frozen convolutions) run oneDNN with prepacked weights; int8 variants run the quantized engine
(fbgemm/x86 or qnnpack).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pytest_modelopt.efficiency.timing import (
    CONVOLUTION,
    Kernel,
    KernelUnavailable,
    check_shape,
    convolution_shape,
    torch_version,
)
from pytest_modelopt.hardware import Hardware

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _onednn_available(precision: str) -> None:
    import torch

    if not torch.backends.mkldnn.is_available():
        raise KernelUnavailable("torch was built without oneDNN")
    if precision == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise KernelUnavailable("oneDNN has no bf16 kernel on this CPU")


@contextmanager
def _torch_mm(precision: str, n: int, threads: int, hardware: Hardware) -> Iterator[Any]:
    import torch

    dtype = getattr(torch, _DTYPES[precision])
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    backend = "MKL" if precision == "fp32" and torch.backends.mkl.is_available() else "ATen/oneDNN"
    try:
        check_shape(torch.mm(a, b).shape, (n, n), "torch.mm")
    except RuntimeError as error:  # no kernel for this dtype on this device
        raise KernelUnavailable(str(error).splitlines()[0]) from error
    yield (lambda: torch.mm(a, b)), f"{torch_version()} torch.mm {precision} ({backend})"


@contextmanager
def _torch_onednn_linear(precision: str, n: int, threads: int, hardware: Hardware) -> Iterator[Any]:
    """Give a call of oneDNN's Linear with a prepacked weight.

    What inductor's freezing runs for a Linear (torch.compile, PT2E).
    """
    import torch

    _onednn_available(precision)
    dtype = getattr(torch, _DTYPES[precision])
    x, w = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, n)

        def call() -> Any:
            return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")

        check_shape(call().shape, (n, n), "mkldnn._linear_pointwise")
    except RuntimeError as error:
        raise KernelUnavailable(str(error).splitlines()[0]) from error
    yield call, f"{torch_version()} mkldnn._linear_pointwise {precision} (oneDNN, packed weight)"


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

    check_shape(call().shape, (n, n), "quantized.linear")
    yield call, f"{torch_version()} quantized.linear int8 ({engine} engine)"


@contextmanager
def _torch_onednn_convolution(
    precision: str, channels: int, threads: int, hardware: Hardware
) -> Iterator[Any]:
    """Give a call of oneDNN's convolution with a prepacked weight on a channels-last input.

    What inductor's freezing runs for a convolution (torch.compile); eager and TorchScript run
    the same oneDNN primitive, reordering the weight at every call.
    """
    import torch

    _onednn_available(precision)
    dtype = getattr(torch, _DTYPES[precision])
    shape = convolution_shape(channels)
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, channels, 3, 3, dtype=dtype)
    geometry = ([1, 1], [1, 1], [1, 1], 1)  # padding, stride, dilation, groups
    try:
        packed = torch.ops.mkldnn._reorder_convolution_weight(weight, *geometry, list(shape))

        def call() -> Any:
            return torch.ops.mkldnn._convolution_pointwise(
                x, packed, None, *geometry, "none", [], ""
            )

        check_shape(call().shape, shape, "mkldnn._convolution_pointwise")
    except (RuntimeError, TypeError) as error:  # TypeError: the op's signature changed
        raise KernelUnavailable(str(error).splitlines()[0][:200]) from error
    yield (
        call,
        (f"{torch_version()} mkldnn._convolution_pointwise {precision} (oneDNN, packed weight)"),
    )


@contextmanager
def _torch_quantized_convolution(
    precision: str, channels: int, threads: int, hardware: Hardware
) -> Iterator[Any]:
    """Give a call of the quantized engine's convolution on a channels-last uint8 input."""
    import torch

    engine = torch.backends.quantized.engine
    if engine == "none":
        raise KernelUnavailable("torch has no quantized engine here")
    shape = convolution_shape(channels)
    with warnings.catch_warnings():  # torch 2.14 deprecates quantized tensors, fbgemm still runs
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        x = torch.quantize_per_tensor(torch.randn(shape), 0.05, 64, torch.quint8)
        weight = torch.quantize_per_tensor(
            torch.randn(channels, channels, 3, 3), 0.05, 0, torch.qint8
        )
    x = x.contiguous(memory_format=torch.channels_last)
    packed = torch.ops.quantized.conv2d_prepack(weight, None, [1, 1], [1, 1], [1, 1], 1)

    def call() -> Any:
        return torch.ops.quantized.conv2d(x, packed, 0.1, 64)

    check_shape(call().shape, shape, "quantized.conv2d")
    yield call, f"{torch_version()} quantized.conv2d int8 ({engine} engine)"


KERNELS = (
    Kernel("torch", "torch.mm", ("fp32", "bf16", "fp16"), _torch_mm, ("torch",)),
    Kernel("torch", "mkldnn._linear_pointwise", ("fp32", "bf16"), _torch_onednn_linear, ("torch",)),
    Kernel("torch", "quantized.linear", ("int8",), _torch_quantized_linear, ("torch",)),
    Kernel(
        "torch",
        "mkldnn._convolution_pointwise",
        ("fp32", "bf16"),
        _torch_onednn_convolution,
        ("torch",),
        CONVOLUTION,
    ),
    Kernel(
        "torch",
        "quantized.conv2d",
        ("int8",),
        _torch_quantized_convolution,
        ("torch",),
        CONVOLUTION,
    ),
)
