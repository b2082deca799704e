"""Distance to the hardware's limit: a variant's achieved operations per second against this
machine's measured peak for the variant's precision (a roofline fraction).

The model's operations are counted once, on the fp32 reference, with torch's FlopCounterMode
(a multiply-add counts as two); every variant of the model does the same arithmetic, whatever its
precision. The peak is a large matrix product in fp32, bf16 and int8 (the quantized engine's
integer Linear kernel), timed once per machine fingerprint, thread count and torch version, and
cached.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_modelopt.atomic import atomic_write_text

PEAK_SIZE = 2048
PROBE_SIZE = 256
PRECISIONS = ("fp32", "bf16", "int8")
PEAK_METHOD = "v2"  # part of the cache key: v1 timed int8 with torch._int_mm


def precision_class(precision: str) -> str:
    """Map a variant's stated precision (``f32``, ``int8 weights, ...``, ``bf16``) to a peak."""
    text = precision.lower()
    if "int8" in text:
        return "int8"
    if "bf16" in text:
        return "bf16"
    if "16" in text:
        return "fp16"
    return "fp32"


def count_flops(model: Any, batch: Any) -> int | None:
    """Floating-point operations of one call of a torch model on ``batch``; None if uncountable."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pytest_modelopt.torchtools import call_model

    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            call_model(model, batch)
    except Exception:  # a model FlopCounterMode cannot trace simply has no roofline figure
        return None
    total = int(counter.get_total_flops())
    return total or None


def peak_ops_per_second(
    precision: str, *, threads: int, fingerprint: str, cache_dir: Path | None
) -> float | None:
    """This machine's measured peak for ``precision`` (ops/s); None where it cannot be measured."""
    import torch

    key = f"{fingerprint}-t{threads}-torch{torch.__version__}-{PEAK_METHOD}"
    cache_file = cache_dir / f"peak-{key}.json" if cache_dir else None
    cached: dict[str, float | None] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except ValueError:
            cached = {}
    if precision not in cached:
        cached[precision] = _measure_peak(precision, threads)
        if cache_file is not None:
            atomic_write_text(cache_file, json.dumps(cached, sort_keys=True))
    return cached[precision]


def _measure_peak(precision: str, threads: int, n: int = PEAK_SIZE) -> float | None:
    """Best ops/s of an n x n matrix product over about a second.

    A precision without fast kernels here (fp16 on most CPUs runs at well under 1 GOPS) would
    make one 2048 product take seconds to minutes: a 256 product is timed first, and its figure
    is the peak when the full size would exceed half a second.
    """

    from pytest_modelopt.measure import fixed_threads

    if n > PROBE_SIZE:
        probe = _measure_peak(precision, threads, PROBE_SIZE)
        if probe is None or 2 * n**3 / probe > 0.5:
            return probe
    call = _quantized_linear(n) if precision == "int8" else _float_matmul(precision, n)
    if call is None:
        return None
    with fixed_threads(threads):
        try:
            call()
        except RuntimeError:  # no kernel for this precision on this device
            return None
        best = float("inf")
        deadline = time.perf_counter() + (1.0 if n == PEAK_SIZE else 0.2)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _float_matmul(precision: str, n: int) -> Callable[[], Any] | None:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return None
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return lambda: torch.mm(a, b)


def _quantized_linear(n: int) -> Callable[[], Any] | None:
    """An n x n x n product through the quantized engine's Linear (fbgemm/x86 or qnnpack): the
    integer kernels that int8 variants run. ``torch._int_mm`` is a reference loop on CPUs, many
    times slower, and made int8 variants appear to exceed their peak."""
    import torch

    if torch.backends.quantized.engine == "none":
        return None
    with warnings.catch_warnings():  # torch 2.14 deprecates quantized tensors, fbgemm still runs
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        activations = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 64, torch.quint8)
        weight = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(weight, None)

    def call() -> Any:
        return torch.ops.quantized.linear(activations, packed, 0.1, 64)

    return call


def roofline(flops: int | None, latency_s: float, peak: float | None) -> dict[str, float | None]:
    achieved = flops / latency_s if flops and latency_s > 0 else None
    return {
        "flops_per_call": float(flops) if flops else None,
        "achieved_gops": achieved / 1e9 if achieved else None,
        "peak_gops": peak / 1e9 if peak else None,
        "fraction_of_peak": achieved / peak if achieved and peak else None,
    }
