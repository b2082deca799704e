"""Distance to the hardware's limit (a roofline fraction).

A variant's achieved operations per second are set against this machine's measured peak for the
variant's precision.

The model's operations are counted once, on the fp32 reference, with torch's FlopCounterMode
(a multiply-add counts as two); every variant of the model does the same arithmetic, whatever its
precision.

The peak of a precision is the fastest matrix product of every installed runtime in that
precision: torch (``torch.mm``, oneDNN's packed Linear, the quantized engine's int8 Linear), ONNX
Runtime (MLAS: ``MatMul``, ``MatMulInteger``, ``QLinearMatMul``) and OpenVINO (``MatMul`` with
constant weights, a FullyConnected kernel, and with two inputs, a oneDNN brgemm MatMul), each on
the harness's threads and timed until its best call is reproduced. Taking one runtime's GEMM made
variants of the others read above 100% (torch's MKL on AMD CPUs is slower than MLAS and oneDNN).
The peak is measured once per machine fingerprint, thread count and runtime versions, and cached;
its record names the kernel that set it and every kernel timed.

Beside it stands a theoretical ceiling read from the hardware (cores x vector lanes x FMA units x
clock, where the clock can be read). A variant that runs faster than the measured peak is a
measurement problem (a peak measured too low, or a runtime doing fewer operations than counted,
as Winograd convolutions do), flagged as such and never shown as a fraction.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_modelopt.atomic import atomic_write_text
from pytest_modelopt.hardware import Hardware, cpu_clock
from pytest_modelopt.peak_kernels import (
    KERNELS,
    MAX_SECONDS,
    STABLE,
    KernelTiming,
    KernelUnavailable,
    time_kernel,
)

PRECISIONS = ("fp32", "bf16", "int8")
# Part of the cache key and checked in the file: v1 timed int8 with torch._int_mm, v2 timed torch
# alone; v3 takes the best kernel of every installed runtime, with the record of each.
PEAK_METHOD = "v3"
# The runtimes whose versions key the cache: a new version may bring new kernels.
PEAK_RUNTIMES = ("torch", "onnxruntime", "openvino")


@dataclass(frozen=True)
class Ceiling:
    """The most operations per second the detected hardware can issue for a precision.

    ``cores x ops per cycle per core x clock``; ``ops_per_s`` is None when the clock is unknown.
    """

    ops_per_s: float | None
    cores: int
    ops_per_cycle: int
    clock_hz: float | None
    clock_source: str
    basis: str

    def describe(self) -> str:
        """Return the ceiling in GOP/s with how it was computed, or why it is unknown."""
        if self.ops_per_s is None:
            return f"unknown ({self.basis}; clock: {self.clock_source})"
        return f"{self.ops_per_s / 1e9:.0f} GOP/s ({self.basis})"


@dataclass(frozen=True)
class Peak:
    """This machine's peak for one precision: the fastest kernel of every installed runtime."""

    precision: str
    ops_per_s: float
    kernel: str
    threads: int
    ceiling: Ceiling
    kernels: tuple[KernelTiming, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the peak as JSON-ready values, as the peak cache and result records keep it."""
        data = asdict(self)
        data["kernels"] = [asdict(timing) for timing in self.kernels]
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Peak:
        """Rebuild a peak from :meth:`to_dict`'s values."""
        return cls(
            precision=data["precision"],
            ops_per_s=float(data["ops_per_s"]),
            kernel=data["kernel"],
            threads=int(data["threads"]),
            ceiling=Ceiling(**data["ceiling"]),
            kernels=tuple(KernelTiming(**timing) for timing in data["kernels"]),
            skipped=dict(data["skipped"]),
            notes=tuple(data["notes"]),
        )


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


# --- the theoretical ceiling -------------------------------------------------------------------


def vector_units(hardware: Hardware) -> tuple[int, int, str]:
    """``(vector bits, FMA units)`` per core of the detected CPU, and what the figure assumes.

    Upper bounds where parts of a family differ: a ceiling must not be exceeded. The CPU's own
    flags are used, not those an ISA cap leaves: ONNX Runtime ignores the cap.
    """
    cpu = hardware.cpu
    flags = cpu.flags
    if "avx512f" in flags:
        if cpu.vendor == "AuthenticAMD" and (cpu.family or 0) < 26:
            return 256, 2, "AVX-512 on a 256-bit datapath (Zen 4), 2 FMA pipes"
        return 512, 2, "AVX-512, 2 FMA units (some Xeons have 1)"
    if "avx2" in flags:
        return 256, 2, "AVX2, 2 FMA units"
    if "neon" in flags or "sve" in flags:
        return 128, 4, "128-bit NEON/SVE, up to 4 FMA pipes (Neoverse V, Apple; N1 has 2)"
    return 128, 2, "128-bit SSE, 2 units (no AVX2 flag detected)"


def _precision_ops_per_cycle(flags: tuple[str, ...], precision: str, fp32: int) -> tuple[int, str]:
    """Operations per cycle per core for ``precision``, from the fp32 FMA rate ``fp32``."""
    if precision == "int8":
        if "amx_int8" in flags:
            return 2048, "AMX int8 tiles, 2048 ops/cycle"
        return 4 * fp32, "4 int8 products per 32-bit lane (VNNI VPDPBUSD, pmaddubsw or sdot)"
    if precision == "bf16":
        if "amx_bf16" in flags:
            return 1024, "AMX bf16 tiles, 1024 ops/cycle"
        if "avx512_bf16" in flags:
            return 2 * fp32, "2 bf16 products per 32-bit lane (VDPBF16PS)"
        return fp32, "no bf16 arithmetic: computed in fp32"
    if precision == "fp16":
        if "avx512_fp16" in flags or "neon" in flags:
            return 2 * fp32, "2 fp16 lanes per 32-bit lane"
        return fp32, "no fp16 arithmetic: computed in fp32"
    return fp32, "fp32 FMA"


def theoretical_ceiling(
    hardware: Hardware,
    precision: str,
    threads: int,
    *,
    clock: tuple[float | None, str] | None = None,
) -> Ceiling:
    """Compute the hardware's ceiling for ``precision`` from its cores, vector units and clock.

    Cores (the harness's threads, at most the physical cores) x vector lanes x 2 ops per FMA x
    FMA units x clock. The clock is the highest the OS reports (cpufreq), else the advertised
    one; boost clocks above an advertised base clock can exceed this figure, which says so.
    ``clock`` (Hz, source) replaces the clock read from this machine.
    """
    bits, units, datapath = vector_units(hardware)
    fp32 = bits // 32 * 2 * units
    per_cycle, kind = _precision_ops_per_cycle(hardware.cpu.flags, precision, fp32)
    cores = max(1, min(threads, hardware.cpu.physical_cores))
    clock_hz, source = clock or cpu_clock()
    basis = f"{cores} cores x {per_cycle} ops/cycle/core ({datapath}; {kind})"
    if clock_hz is None:
        return Ceiling(None, cores, per_cycle, None, source, basis)
    basis += f" x {clock_hz / 1e9:.3g} GHz ({source})"
    return Ceiling(cores * per_cycle * clock_hz, cores, per_cycle, clock_hz, source, basis)


# --- the measured peak -------------------------------------------------------------------------

_MEMO: dict[str, Peak | None] = {}
_REMEASURED: set[str] = set()  # peaks measured again in this process, after a variant beat them


def peak_cache_file(cache_dir: Path, *, fingerprint: str, threads: int) -> Path:
    """Where the peaks of this machine, thread count and runtime versions are kept."""
    versions = json.dumps(runtime_versions(), sort_keys=True)
    digest = hashlib.sha256(versions.encode()).hexdigest()[:10]
    return cache_dir / f"peak-{fingerprint}-t{threads}-{PEAK_METHOD}-{digest}.json"


def runtime_versions() -> dict[str, str]:
    """Return the installed versions of the runtimes whose kernels set the peak.

    A new version measures the peak again: it is part of the cache's key.
    """
    versions = {}
    for name in PEAK_RUNTIMES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def measured_peak(
    precision: str,
    *,
    threads: int,
    hardware: Hardware,
    cache_dir: Path | None,
    log: Callable[[str], None] = lambda message: None,
    reached: float | None = None,
) -> Peak | None:
    """Return this machine's peak for ``precision``: the best matrix product of any runtime.

    Every installed runtime's kernels are timed; None where none has a kernel. Measured once and
    kept in ``cache_dir`` (and in memory). ``reached`` is the operations per second a variant
    just reached: a peak below it may have been measured at a busy moment (on a shared 2-core
    machine a cached bf16 peak read 394 GOP/s, a quiet one 413), so it is measured once more in
    this process and the better of the two is kept; a variant still above it is then flagged.
    """
    fingerprint = hardware.fingerprint
    memo_key = f"{fingerprint}|{threads}|{precision}|{sorted(runtime_versions().items())}"
    cache_file = None
    if cache_dir is not None:
        cache_file = peak_cache_file(cache_dir, fingerprint=fingerprint, threads=threads)
    if memo_key in _MEMO:
        peak = _MEMO[memo_key]
    else:
        cached = _read_cache(cache_file)
        if precision in cached:
            peak = cached[precision]
        else:
            peak = _measure_peak(precision, threads=threads, hardware=hardware, log=log)
            _write_cache(cache_file, precision, peak)
    if reached and peak is not None and peak.ops_per_s < reached and memo_key not in _REMEASURED:
        _REMEASURED.add(memo_key)
        log(
            f"a variant reached {reached / 1e9:.1f} GOP/s, above the {precision} peak of "
            f"{peak.ops_per_s / 1e9:.1f} GOP/s measured earlier (perhaps at a busy moment): "
            "measuring the peak again"
        )
        again = _measure_peak(precision, threads=threads, hardware=hardware, log=log)
        if again is not None and again.ops_per_s > peak.ops_per_s:
            peak = again
            _write_cache(cache_file, precision, peak)
    _MEMO[memo_key] = peak
    return peak


def _write_cache(cache_file: Path | None, precision: str, peak: Peak | None) -> None:
    """Record ``peak`` for ``precision`` in the cache file, beside the other precisions'."""
    if cache_file is None:
        return
    cached = _read_cache(cache_file)
    cached[precision] = peak
    document = {
        "method": PEAK_METHOD,
        "versions": runtime_versions(),
        "peaks": {name: p.to_dict() if p else None for name, p in cached.items()},
    }
    atomic_write_text(cache_file, json.dumps(document, indent=1, sort_keys=True))


def _read_cache(cache_file: Path | None) -> dict[str, Peak | None]:
    """Return the cached peaks; a file of another method, or a damaged one, is measured again."""
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        document = json.loads(cache_file.read_text())
        if document.get("method") != PEAK_METHOD:
            return {}
        return {
            name: Peak.from_dict(data) if data else None for name, data in document["peaks"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _measure_peak(
    precision: str, *, threads: int, hardware: Hardware, log: Callable[[str], None]
) -> Peak | None:
    kernels = [kernel for kernel in KERNELS if precision in kernel.precisions]
    if not kernels:
        log(f"no {precision} peak: no runtime has a {precision} matrix product")
        return None
    log(
        f"measuring this machine's {precision} peak: {len(kernels)} matrix products on "
        f"{threads} threads, about {2 * len(kernels)} s (cached afterwards)"
    )
    timings: list[KernelTiming] = []
    skipped: dict[str, str] = {}
    for kernel in kernels:
        label = f"{kernel.runtime} {kernel.name}"
        try:
            timing = time_kernel(kernel, precision, threads=threads, hardware=hardware)
        except KernelUnavailable as reason:
            skipped[label] = str(reason)
            log(f"{precision} peak: {label}: skipped ({reason})")
            continue
        except Exception as error:  # a runtime's failure costs its kernel, not the variant's result
            skipped[label] = (
                f"failed: {type(error).__name__}: {next(iter(str(error).splitlines()), '')[:200]}"
            )
            log(f"{precision} peak: {label}: {skipped[label]}")
            continue
        timings.append(timing)
        log(f"{precision} peak: {timing.kernel}: {timing.ops_per_s / 1e9:.1f} GOP/s")
    if not timings:
        return None
    best = max(timings, key=lambda timing: timing.ops_per_s)
    ceiling = theoretical_ceiling(hardware, precision, threads)
    notes = []
    if ceiling.ops_per_s is not None and best.ops_per_s > ceiling.ops_per_s:
        notes.append(
            f"the measured peak is {best.ops_per_s / ceiling.ops_per_s:.2f}x the theoretical "
            f"ceiling: the cores run above the clock read ({ceiling.clock_source}), or the "
            "ceiling's model of this CPU is too low"
        )
    unstable = [timing.kernel for timing in timings if not timing.stable]
    if unstable:
        notes.append(
            f"best call not reproduced within {STABLE:.0%} in {MAX_SECONDS:g} s (a noisy "
            f"machine): {', '.join(unstable)}"
        )
    log(
        f"{precision} peak: {best.ops_per_s / 1e9:.1f} GOP/s by {best.kernel}; theoretical "
        f"ceiling {ceiling.describe()}"
    )
    return Peak(
        precision=precision,
        ops_per_s=best.ops_per_s,
        kernel=best.kernel,
        threads=threads,
        ceiling=ceiling,
        kernels=tuple(timings),
        skipped=skipped,
        notes=tuple(notes),
    )


def roofline(flops: int | None, latency_s: float, peak: Peak | None) -> dict[str, Any]:
    """Set achieved operations per second against the measured peak and the theoretical ceiling.

    Faster than the measured peak is a measurement problem: ``fraction_of_peak`` is then None,
    ``measurement_problem`` says why, and ``achieved_over_peak`` keeps the ratio.
    """
    achieved = flops / latency_s if flops and latency_s > 0 else None
    figures: dict[str, Any] = {
        "flops_per_call": float(flops) if flops else None,
        "achieved_gops": achieved / 1e9 if achieved else None,
        "peak_gops": peak.ops_per_s / 1e9 if peak else None,
        "peak_kernel": peak.kernel if peak else None,
        "ceiling_gops": (peak.ceiling.ops_per_s / 1e9 if peak and peak.ceiling.ops_per_s else None),
        "ceiling": peak.ceiling.describe() if peak else None,
        "fraction_of_peak": achieved / peak.ops_per_s if achieved and peak else None,
        "measurement_problem": None,
    }
    if achieved and peak and achieved > peak.ops_per_s:
        figures["fraction_of_peak"] = None
        figures["achieved_over_peak"] = achieved / peak.ops_per_s
        figures["measurement_problem"] = (
            f"achieved {achieved / 1e9:.1f} GOP/s is {achieved / peak.ops_per_s:.2f}x the "
            f"measured {peak.precision} peak ({peak.ops_per_s / 1e9:.1f} GOP/s, {peak.kernel}; "
            f"theoretical ceiling {peak.ceiling.describe()}): the peak was measured too low, or "
            "the runtime computes fewer operations than counted (Winograd or FFT convolutions)"
        )
    return figures
