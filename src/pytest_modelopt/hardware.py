"""What the measurements run on: CPU, NVIDIA GPUs, each backend's devices, and a fingerprint.

Detection imports no ML library: the CPU comes from py-cpuinfo (cached, since it takes about a
second), GPUs from nvidia-ml-py's ``pynvml``. The backends' own device lists (torch, ONNX Runtime,
OpenVINO, TensorFlow) are read only by :func:`backend_devices`, on request.

The runtimes can be told to use no more than an older instruction set through their own
environment variables (:data:`ISA_CAP_VARIABLES`). Detection reads them: a cap removes the flags it
forbids from what techniques and contracts see (``Hardware.has_isa``), and a cap that lowers the
machine's ISA level shows in the fingerprint, so capped baselines never mix with uncapped ones.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


# The x86 levels a cap can stop at, lowest first, each with the flags of ISA_FLAGS it still allows.
_CAP_LEVELS: dict[str, frozenset[str]] = {}
for _level, _added in (
    ("sse4", ()),
    ("avx2", ("avx2",)),
    ("avx512", ("avx512f",)),
    ("avx512vnni", ("avx512_vnni",)),
    ("avx512bf16", ("avx512_bf16",)),
    ("avx512fp16", ("avx512_fp16",)),
    ("amx", ("amx_tile", "amx_int8", "amx_bf16")),
):
    _CAP_LEVELS[_level] = frozenset().union(*_CAP_LEVELS.values(), _added)
_X86_FLAGS = _CAP_LEVELS["amx"]

# Each variable that caps a runtime's instruction set, what obeys it (measured: see
# docs/architecture.md), and the level each of its values allows; None: no cap.
ISA_CAP_VARIABLES: dict[str, tuple[str, dict[str, str | None]]] = {
    "ONEDNN_MAX_CPU_ISA": (
        "oneDNN: torch's convolutions and bf16 matmuls, TensorFlow, OpenVINO's CPU plugin "
        "(its kernels, not its default precision: OpenVINO variants pin f32 where a cap forbids "
        "bf16)",
        {
            "SSE41": "sse4",
            "AVX": "sse4",
            "AVX2": "avx2",
            "AVX2_VNNI": "avx2",
            "AVX2_VNNI_2": "avx2",
            "AVX512_CORE": "avx512",
            "AVX512_CORE_VNNI": "avx512vnni",
            "AVX512_CORE_BF16": "avx512bf16",
            "AVX512_CORE_FP16": "avx512fp16",
            "AVX10_1_512": "avx512fp16",
            "AVX512_CORE_AMX": "amx",
            "AVX10_1_512_AMX": "amx",
            "AVX512_CORE_AMX_FP16": None,
            "AVX10_1_512_AMX_FP16": None,
            "ALL": None,
            "DEFAULT": None,
        },
    ),
    "ATEN_CPU_CAPABILITY": (
        "torch's vectorized ATen kernels (elementwise, reductions, softmax)",
        {"DEFAULT": "sse4", "AVX2": "avx2", "AVX512": None},
    ),
    "MKL_ENABLE_INSTRUCTIONS": (
        "MKL: torch's fp32 BLAS (Linear, matmul)",
        {
            "SSE4_2": "sse4",
            "AVX": "sse4",
            "AVX2": "avx2",
            "AVX512": "avx512",
            "AVX512_E1": "avx512vnni",
        },
    ),
    "FBGEMM_ENABLE_INSTRUCTIONS": (
        "FBGEMM: torch's x86 int8 kernels (dynamic and FX static int8)",
        {
            "AVX2": "avx2",
            "AVX512": "avx512",
            "AVX512_256": "avx512",
            "AVX512_E1": "avx512vnni",
            "AVX512_E1_256": "avx512vnni",
        },
    ),
}
_CAP_ALIASES = {"DNNL_MAX_CPU_ISA": "ONEDNN_MAX_CPU_ISA"}  # oneDNN's older spelling


@dataclass(frozen=True)
class IsaCap:
    """The instruction-set caps in force, read from the runtimes' environment variables.

    ``level`` is the lowest level any of them allows: techniques and contracts see only the flags
    it allows, though runtimes that obey none of these variables (ONNX Runtime's MLAS, XNNPACK in
    LiteRT, OpenVINO's MLAS GEMMs) still use everything the CPU has.
    """

    variables: tuple[tuple[str, str], ...]
    level: str | None
    unrecognized: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> IsaCap | None:
        """Read the caps from ``environ`` (default: this process's); None when none is set.

        A value that is not understood is kept in ``unrecognized`` and not applied.
        """
        environ = os.environ if environ is None else environ
        variables, levels, unrecognized = [], [], []
        for name in (*ISA_CAP_VARIABLES, *_CAP_ALIASES):
            value = environ.get(name, "").strip()
            if not value:
                continue
            variables.append((name, value))
            _, levels_of = ISA_CAP_VARIABLES[_CAP_ALIASES.get(name, name)]
            if value.upper() not in levels_of:
                unrecognized.append(f"{name}={value}")
            elif (level := levels_of[value.upper()]) is not None:
                levels.append(level)
        if not variables:
            return None
        order = list(_CAP_LEVELS)
        lowest = min(levels, key=order.index) if levels else None
        return cls(tuple(variables), lowest, tuple(unrecognized))

    def allows(self, flag: str) -> bool:
        """Return whether the cap lets runtimes use ``flag`` (flags it does not govern pass)."""
        return self.level is None or flag not in _X86_FLAGS or flag in _CAP_LEVELS[self.level]

    def describe(self) -> str:
        """Return the variables in force, ``NAME=value``, and those not understood."""
        text = ", ".join(f"{name}={value}" for name, value in self.variables)
        if self.unrecognized:
            text += f" (not understood, so not applied: {', '.join(self.unrecognized)})"
        return text


@dataclass(frozen=True)
class GPU:
    """An NVIDIA GPU as NVML reports it."""

    index: int
    name: str
    memory_mb: int
    driver: str
    compute_capability: str


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
                "obeyed_by": {
                    name: ISA_CAP_VARIABLES[_CAP_ALIASES.get(name, name)][0]
                    for name, _ in self.isa_cap.variables
                },
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
    found, notes = _detect_nvidia_gpus() if gpus else ((), ())
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


def _detect_nvidia_gpus() -> tuple[tuple[GPU, ...], tuple[str, ...]]:
    """NVIDIA GPUs through NVML. No driver or no nvidia-ml-py means no GPU, never an error."""
    if importlib.util.find_spec("pynvml") is None:
        return (), ("nvidia-ml-py is not installed: NVIDIA GPUs were not looked for",)
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return (), (f"no NVIDIA driver ({error})",)
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GPU(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_mb=pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                    driver=driver,
                    compute_capability=f"{major}.{minor}",
                )
            )
        return tuple(gpus), ()
    finally:
        pynvml.nvmlShutdown()


def gpu_state(index: int = 0) -> dict[str, Any]:
    """Clocks and temperature of one GPU right now, to record beside a GPU measurement."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "memory_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
        }
    finally:
        pynvml.nvmlShutdown()


def backend_devices() -> dict[str, Any]:
    """Each installed backend's view of the devices; imports the backends, so call it on demand."""
    probes: dict[str, Callable[[], Any]] = {
        "torch": _torch_devices,
        "onnxruntime": _onnxruntime_devices,
        "openvino": _openvino_devices,
        "tensorflow": _tensorflow_devices,
    }
    devices: dict[str, Any] = {}
    for module, probe in probes.items():
        if importlib.util.find_spec(module) is None:
            devices[module] = None
            continue
        try:
            devices[module] = probe()
        except Exception as error:  # a broken backend install is reported, not raised
            devices[module] = {"error": f"{type(error).__name__}: {error}"}
    return devices


def _torch_devices() -> dict[str, Any]:
    import torch

    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "version": torch.__version__,
        "cuda": cuda,
        "threads": torch.get_num_threads(),
        "quantized_engines": list(torch.backends.quantized.supported_engines),
    }


def _onnxruntime_devices() -> dict[str, Any]:
    import onnxruntime

    return {
        "version": onnxruntime.__version__,
        "providers": onnxruntime.get_available_providers(),
    }


def _openvino_devices() -> dict[str, Any]:
    import openvino

    core = openvino.Core()
    return {
        "version": openvino.get_version(),
        "devices": {
            device: core.get_property(device, "FULL_DEVICE_NAME")
            for device in core.available_devices
        },
    }


_TF_PROBE = """
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
print(json.dumps({"version": tf.__version__,
                  "devices": [d.name for d in tf.config.list_physical_devices()]}))
"""


def _tensorflow_devices() -> dict[str, Any]:
    """Return TensorFlow's version and devices, asked in a child process.

    Importing TensorFlow into a process that later imports torchvision crashes it (seen with
    tensorflow-cpu 2.21 and torchvision 0.29), and TensorFlow takes seconds to import.
    """
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", _TF_PROBE], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        raise RuntimeError(probe.stderr.strip().splitlines()[-1] if probe.stderr else "failed")
    result: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    return result


@functools.cache
def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
