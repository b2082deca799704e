"""Distance to the hardware's limit (a roofline fraction).

A variant's achieved operations per second are set against this machine's measured peak for the
variant's precision (:mod:`.roofline`).

The model's operations are counted once, on the fp32 reference, with torch's FlopCounterMode
(a multiply-add counts as two); every variant of the model does the same arithmetic, whatever its
precision.

The peak of a precision (:mod:`.peak`) is the fastest kernel of every installed runtime in that
precision, each built as that runtime's variants are and timed on the harness's threads until its
best call is reproduced (:mod:`.timing`): matrix products and 3x3 convolutions of torch
(:mod:`.torch_kernels`), ONNX Runtime (:mod:`.onnxruntime_kernels`) and OpenVINO
(:mod:`.openvino_kernels`). Taking one runtime's GEMM made variants of the others read above 100%
(torch's MKL on AMD CPUs is slower than MLAS and oneDNN), and a convolution kernel can beat its
runtime's own GEMM. The peak is measured once per machine fingerprint, thread count and runtime
versions, and cached; its record names the kernel that set it and every kernel timed.

Beside it stands a theoretical ceiling read from the hardware (:mod:`.ceiling`). A variant that
runs faster than the measured peak is a measurement problem (a peak measured too low, or a runtime
doing fewer operations than counted, as Winograd convolutions do), flagged as such and never shown
as a fraction.
"""

from pytest_modelopt.efficiency.ceiling import Ceiling, theoretical_ceiling, vector_units
from pytest_modelopt.efficiency.peak import (
    KERNELS,
    PEAK_METHOD,
    Peak,
    measured_peak,
    peak_cache_file,
    runtime_versions,
)
from pytest_modelopt.efficiency.roofline import count_flops, precision_class, roofline
from pytest_modelopt.efficiency.timing import (
    Kernel,
    KernelTiming,
    KernelUnavailable,
    Workload,
    time_kernel,
)

__all__ = [
    "KERNELS",
    "PEAK_METHOD",
    "Ceiling",
    "Kernel",
    "KernelTiming",
    "KernelUnavailable",
    "Peak",
    "Workload",
    "count_flops",
    "measured_peak",
    "peak_cache_file",
    "precision_class",
    "roofline",
    "runtime_versions",
    "theoretical_ceiling",
    "time_kernel",
    "vector_units",
]
