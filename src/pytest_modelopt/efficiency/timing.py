"""How a peak kernel is described and timed.

A :class:`Kernel` is one runtime's implementation of a :class:`Workload` (a matrix product, a
convolution) in the precisions it has kernels for. It is timed at the largest of the workload's
sizes whose call stays short, on the harness's threads, until its best call is reproduced.
"""

from __future__ import annotations

import gc
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_modelopt.hardware import Hardware

# A kernel goes to the next of its workload's sizes where one call would take under STEP_SECONDS,
# judged from a short timing of the size below. Generous, because a small workload's figure is
# fragile: two threads on a busy machine wait at every barrier, and torch.mm at 256 read 2.8
# GOP/s where it does 140 alone.
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
class Workload:
    """What a kernel computes, at sizes from smallest to largest.

    ``operations(size)`` counts a call's arithmetic as FlopCounterMode counts a model's (a
    multiply-add is two); ``shape(size)`` says what a call computes, for the record.
    """

    name: str
    sizes: tuple[int, ...]
    operations: Callable[[int], int]
    shape: Callable[[int], str]


MATRIX_PRODUCT = Workload(
    "matrix product",
    (256, 1024, 2048),
    operations=lambda n: 2 * n**3,
    shape=lambda n: f"{n}x{n} @ {n}x{n}",
)

# A 3x3 convolution, stride 1, padded, keeping its channel count: a ResNet stage's body. Runtimes
# run convolutions as direct or implicit-GEMM kernels (oneDNN's brgemm convolution, MLAS's NCHWc
# kernels) that can beat their own matrix products: OpenVINO's bf16 resnet18 at batch 8 reached
# 421 GOP/s on a 2-core Zen 4, above every bf16 matrix product timed there (400-413).
CONVOLUTION_SPATIAL = 56
CONVOLUTION = Workload(
    "3x3 convolution",
    (64, 128, 256),
    operations=lambda c: 2 * 9 * c * c * CONVOLUTION_SPATIAL**2,
    shape=lambda c: (
        f"1x{c}x{CONVOLUTION_SPATIAL}x{CONVOLUTION_SPATIAL} * {c}x{c}x3x3, stride 1, pad 1"
    ),
)


def convolution_shape(channels: int) -> tuple[int, int, int, int]:
    """Return the NCHW shape of a CONVOLUTION's input and output at ``channels``."""
    return (1, channels, CONVOLUTION_SPATIAL, CONVOLUTION_SPATIAL)


@dataclass(frozen=True)
class KernelTiming:
    """One runtime's kernel in one precision, timed on the harness's threads."""

    runtime: str
    kernel: str
    size: int
    shape: str
    ops_per_s: float
    median_ops_per_s: float
    calls: int
    seconds: float
    stable: bool


Build = Callable[[str, int, int, Hardware], Any]


@dataclass(frozen=True)
class Kernel:
    """A runtime's implementation of a workload.

    ``build(precision, size, threads, hardware)`` is a context manager giving ``(call, name)``:
    the call, checked once to return a result of the right shape, and the kernel's name (the
    runtime's version, and the primitive it ran where it says).
    """

    runtime: str
    name: str
    precisions: tuple[str, ...]
    build: Build
    packages: tuple[str, ...] = ()
    workload: Workload = MATRIX_PRODUCT


def time_kernel(
    kernel: Kernel, precision: str, *, threads: int, hardware: Hardware
) -> KernelTiming:
    """Time one kernel at the largest of its sizes whose call takes under STEP_SECONDS.

    The size is capped for a precision without fast kernels: fp16 on most CPUs runs at 1 to 3
    GOP/s, and one 2048 product would take seconds. The kernel is timed for MIN_SECONDS or more
    until its best call is reproduced. Raises KernelUnavailable.
    """
    from pytest_modelopt.measure import fixed_threads

    missing = [name for name in kernel.packages if importlib.util.find_spec(name) is None]
    if missing:
        raise KernelUnavailable(f"{', '.join(missing)} not installed")
    workload = kernel.workload
    with fixed_threads(threads):
        size = workload.sizes[0]
        for following in workload.sizes[1:]:
            quick = _time(kernel, precision, size, threads, hardware)
            if workload.operations(following) / quick.ops_per_s > STEP_SECONDS:
                break
            size = following
        return _time(
            kernel, precision, size, threads, hardware, MIN_SECONDS, MAX_SECONDS, MIN_CALLS
        )


def _time(
    kernel: Kernel,
    precision: str,
    size: int,
    threads: int,
    hardware: Hardware,
    min_seconds: float = 0.1,
    max_seconds: float = 0.5,
    min_calls: int = 3,
) -> KernelTiming:
    with kernel.build(precision, size, threads, hardware) as (call, name):
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
    operations = kernel.workload.operations(size)
    return KernelTiming(
        runtime=kernel.runtime,
        kernel=name,
        size=size,
        shape=kernel.workload.shape(size),
        ops_per_s=operations / min(times),
        median_ops_per_s=operations / float(np.median(times)),
        calls=len(times),
        seconds=elapsed,
        stable=stable,
    )


def check_shape(shape: Any, expected: tuple[int, ...], name: str) -> None:
    """Raise KernelUnavailable unless a kernel's output has the expected shape."""
    if tuple(shape) != expected:  # OpenVINO under an ISA cap returned empty outputs
        raise KernelUnavailable(f"{name} returned shape {tuple(shape)}, not {expected}")


def torch_version() -> str:
    """Return ``torch <version>`` without the local build tag, for kernel names."""
    import torch

    return f"torch {torch.__version__.split('+')[0]}"
