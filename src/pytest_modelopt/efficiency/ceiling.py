"""The theoretical ceiling: the most operations per second the detected hardware can issue.

Cores x vector lanes x 2 operations per FMA x FMA units x clock, per precision, where the clock
can be read. Stated beside the measured peak; a measured peak above it says the cores ran above
the clock read, or that the model of this CPU is too low.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_modelopt.hardware import Hardware, cpu_clock


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
