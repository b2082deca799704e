"""What the measurements run on: CPU, NVIDIA GPUs, each backend's devices, and a fingerprint.

Detection imports no ML library: the CPU comes from py-cpuinfo (cached, since it takes about a
second), GPUs from nvidia-ml-py's ``pynvml`` (:mod:`pytest_modelopt.devices`, which also reads the
backends' own device lists, on request).

The runtimes can be told to use no more than an older instruction set through their own
environment variables (:mod:`pytest_modelopt.isa_cap`). Detection reads them: a cap removes the
flags it forbids from what techniques and contracts see (``Hardware.has_isa``), and a cap that
lowers the machine's ISA level shows in the fingerprint, so capped baselines never mix with
uncapped ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_modelopt.devices import GPU, detect_nvidia_gpus
from pytest_modelopt.isa_cap import IsaCap

# The instruction-set extensions that decide which kernels a runtime picks, in canonical spelling.
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "sve",
    "sve2",
)
# Other spellings found in py-cpuinfo and /proc/cpuinfo output.
_FLAG_ALIASES = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "asimd": "neon"}
# Highest first: the first one present names the machine's ISA level in the fingerprint.
ISA_LEVELS = (
    ("amx", ("amx_tile",)),
    ("avx512bf16", ("avx512_bf16",)),
    ("avx512vnni", ("avx512_vnni",)),
    ("avx512", ("avx512f",)),
    ("avx2", ("avx2",)),
    ("sve2", ("sve2",)),
    ("sve", ("sve",)),
    ("neon", ("neon",)),
)


@dataclass(frozen=True)
class CPU:
    """The detected CPU: brand, architecture, vendor and model, core counts and ISA flags."""

    brand: str
    arch: str
    vendor: str
    family: int | None
    model: int | None
    physical_cores: int
    logical_cores: int
    flags: tuple[str, ...]

    @property
    def isa_level(self) -> str:
        """Return the highest ISA level the CPU's flags reach (no ISA cap applied)."""
        return isa_level(self.flags)


def isa_level(flags: tuple[str, ...]) -> str:
    """Return the highest level of :data:`ISA_LEVELS` whose flags are all in ``flags``."""
    for level, needed in ISA_LEVELS:
        if all(flag in flags for flag in needed):
            return level
    return "baseline"


@dataclass(frozen=True)
class Hardware:
    """This machine as it affects measurements: CPU, GPUs, ISA cap, and an optional name.

    ``notes`` say what detection could not tell; they do not take part in comparisons.
    """

    cpu: CPU
    gpus: tuple[GPU, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)
    machine: str | None = None
    isa_cap: IsaCap | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        """The CPU's ISA flags that the runtimes may use: the detected ones, less a cap's."""
        if self.isa_cap is None:
            return self.cpu.flags
        return tuple(flag for flag in self.cpu.flags if self.isa_cap.allows(flag))

    @property
    def isa_level(self) -> str:
        """Return the highest ISA level the runtimes may use: the CPU's, lowered by a cap."""
        return isa_level(self.flags)

    @property
    def fingerprint(self) -> str:
        """A stable, readable key for this class of machine, used to key baselines.

        Built from what changes performance (CPU model, ISA level, core count, GPU model), never
        from anything that drifts between runs such as clock speeds or free memory. An ISA cap
        that lowers the level is part of it (``...-avx512bf16-cap-avx2-2c``): ONNX Runtime and
        XNNPACK ignore the cap, so a capped run is not an AVX2 machine's. A ``machine`` name set
        by the user (a class of CI runners) replaces it.
        """
        if self.machine:
            return _slug(self.machine)
        parts = [_slug(self.cpu.brand)]
        if self.cpu.family is not None and self.cpu.model is not None:
            parts.append(f"f{self.cpu.family}m{self.cpu.model}")
        parts.append(self.cpu.isa_level)
        if self.isa_cap is not None and self.isa_level != self.cpu.isa_level:
            parts.append(f"cap-{self.isa_cap.level}")
        parts.append(f"{self.cpu.physical_cores}c")
        if self.gpus:
            names = sorted({_slug(gpu.name) for gpu in self.gpus})
            parts.append(f"{len(self.gpus)}x{'+'.join(names)}")
        return "-".join(parts)

    def has_isa(self, flag: str) -> bool:
        """Return whether the runtimes may use the ISA extension ``flag`` (a cap respected)."""
        return flag in self.flags

    def to_dict(self) -> dict[str, Any]:
        """Return the detection as JSON-ready values, fingerprint and ISA cap included."""
        data = asdict(self)
        data["fingerprint"] = self.fingerprint
        data["cpu"]["isa_level"] = self.cpu.isa_level
        if self.isa_cap is not None:
            data["isa_cap"] = {
                "variables": dict(self.isa_cap.variables),
                "level": self.isa_cap.level,
                "unrecognized": list(self.isa_cap.unrecognized),
                "flags_in_use": list(self.flags),
                "obeyed_by": self.isa_cap.obeyed_by(),
            }
        return data

    def describe(self) -> str:
        """Return the fingerprint with the CPU, core counts, GPUs and any ISA cap, in words."""
        gpus = ", ".join(g.name for g in self.gpus) or "no NVIDIA GPU"
        capped = f", ISA capped by {self.isa_cap.describe()}" if self.isa_cap else ""
        return (
            f"{self.fingerprint} ({self.cpu.brand}, {self.cpu.physical_cores} physical / "
            f"{self.cpu.logical_cores} logical cores, {gpus}{capped})"
        )


def detect_hardware(
    *, cache_dir: Path | None = None, machine: str | None = None, gpus: bool = True
) -> Hardware:
    """Detect this machine. ``cache_dir`` keeps py-cpuinfo's answer between runs."""
    cpu = _detect_cpu(cache_dir)
    found, notes = detect_nvidia_gpus() if gpus else ((), ())
    cap = IsaCap.from_environment()
    if cap is not None and cap.unrecognized:
        notes += (f"ISA cap values not understood, so not applied: {', '.join(cap.unrecognized)}",)
    return Hardware(cpu=cpu, gpus=found, notes=notes, machine=machine, isa_cap=cap)


def _detect_cpu(cache_dir: Path | None) -> CPU:
    identity = _cpu_identity()
    cache_file = cache_dir / f"cpu-{identity}.json" if cache_dir and identity else None
    if cache_file is not None and cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text())
            return CPU(**{**data, "flags": tuple(data["flags"])})
        except (ValueError, TypeError, KeyError):
            pass  # a stale or damaged cache entry is rebuilt below
    cpu = _cpu_from_cpuinfo()
    if cache_file is not None:
        from pytest_modelopt.atomic import atomic_write_text

        atomic_write_text(cache_file, json.dumps(asdict(cpu)))
    return cpu


def _cpu_from_cpuinfo() -> CPU:
    import cpuinfo
    import psutil

    info = cpuinfo.get_cpu_info()
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    return CPU(
        brand=info.get("brand_raw") or platform.processor() or "unknown cpu",
        arch=info.get("arch_string_raw") or platform.machine(),
        vendor=info.get("vendor_id_raw", "unknown"),
        family=info.get("family"),
        model=info.get("model"),
        physical_cores=psutil.cpu_count(logical=False) or logical,
        logical_cores=logical,
        flags=normalize_flags(info.get("flags", []), info.get("arch_string_raw", "")),
    )


def normalize_flags(raw: list[str], arch: str) -> tuple[str, ...]:
    """Keep the ISA flags in :data:`ISA_FLAGS`, in canonical spelling."""
    flags = {_FLAG_ALIASES.get(flag.lower(), flag.lower()) for flag in raw}
    if arch.lower() in {"aarch64", "arm64"}:
        flags.add("neon")  # mandatory in ARMv8-A, not always listed
    return tuple(flag for flag in ISA_FLAGS if flag in flags)


def _cpu_identity() -> str | None:
    """Return a cheap hash of what py-cpuinfo would report, to key its cache; None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    wanted = ("model name", "flags", "features", "cpu family", "model\t", "cpu part")
    lines = sorted({line for line in text.splitlines() if line.lower().startswith(wanted)})
    key = "\n".join([platform.machine(), str(os.cpu_count()), *lines])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cpu_clock() -> tuple[float | None, str]:
    """Return the highest clock this CPU's cores may run at (Hz) and where it was read.

    None where no source gives one. Not part of the fingerprint: clocks drift.

    cpufreq's ``cpuinfo_max_freq`` is the highest the kernel allows (boost included); without
    cpufreq (virtual machines) py-cpuinfo's advertised clock, from the brand string or
    /proc/cpuinfo, is a base or host clock that boost may exceed.
    """
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        if khz > 0:
            return khz * 1e3, "cpufreq cpuinfo_max_freq, boost included"
    except (OSError, ValueError):
        pass
    try:
        import cpuinfo

        hz, _ = cpuinfo.get_cpu_info().get("hz_advertised") or (0, 0)
    except Exception:  # py-cpuinfo parses vendor text; a failure means no clock, never an error
        hz = 0
    if hz and hz > 0:
        return float(hz), "py-cpuinfo advertised clock, a base clock that boost may exceed"
    return None, "unknown: no cpufreq and no advertised clock"


@functools.cache
def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"
