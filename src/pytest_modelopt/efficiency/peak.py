"""This machine's measured peak per precision: the fastest kernel of every installed runtime.

Every installed runtime's matrix products and convolutions in the precision (``KERNELS``) are
timed on the harness's threads and the best is the peak. Measured once per machine fingerprint,
thread count and runtime versions, and cached; the record names the kernel that set it and every
kernel timed or skipped.
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
from pytest_modelopt.efficiency import onnxruntime_kernels, openvino_kernels, torch_kernels
from pytest_modelopt.efficiency.ceiling import Ceiling, theoretical_ceiling
from pytest_modelopt.efficiency.timing import (
    MAX_SECONDS,
    STABLE,
    KernelTiming,
    KernelUnavailable,
    time_kernel,
)
from pytest_modelopt.hardware import Hardware

KERNELS = (*torch_kernels.KERNELS, *onnxruntime_kernels.KERNELS, *openvino_kernels.KERNELS)
# Part of the cache key and checked in the file: v1 timed int8 with torch._int_mm, v2 timed torch
# alone, v3 the matrix products of every installed runtime; v4 adds their convolutions.
PEAK_METHOD = "v4"
# The runtimes whose versions key the cache: a new version may bring new kernels.
PEAK_RUNTIMES = ("torch", "onnxruntime", "openvino")


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
    """Return this machine's peak for ``precision``: the best kernel of any runtime.

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
        log(f"no {precision} peak: no runtime has a {precision} kernel")
        return None
    log(
        f"measuring this machine's {precision} peak: {len(kernels)} kernels (matrix products and "
        f"convolutions) on {threads} threads, about {2 * len(kernels)} s (cached afterwards)"
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
