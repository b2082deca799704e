"""Peak memory of a phase (building a variant, running it), host and GPU.

A phase's peak is counted as the rise above the resident size at the phase's start, so what an
earlier variant left behind does not count against the next. On Linux the kernel's high-water
mark is reset at the start of the phase (``/proc/self/clear_refs``), which catches even
short-lived peaks; elsewhere a sampling thread reads the resident size every millisecond.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.host_mb`` (and ``peak.gpu_mb`` on CUDA)."""

    def __init__(self, *, gpu: bool = False) -> None:
        self._gpu = gpu
        self.host_mb = 0.0
        self.gpu_mb: float | None = None
        self.method = ""
        self._start = 0
        self._samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        self._start = _rss_bytes()
        if _reset_high_water_mark():
            self.method = "kernel high-water mark"
        else:
            self.method = "sampled every 1 ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        if self._gpu:
            sys.modules["torch"].cuda.reset_peak_memory_stats()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = max(self._samples, default=self._start)
        else:
            peak = _high_water_mark_bytes()
        self.host_mb = max(0, peak - self._start) / 2**20
        if self._gpu:
            self.gpu_mb = sys.modules["torch"].cuda.max_memory_allocated() / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._samples.append(_rss_bytes())
            time.sleep(0.001)


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return _high_water_mark_bytes() > 0
    except OSError:
        return False


def _high_water_mark_bytes() -> int:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return 0
    return int(match.group(1)) * 1024 if match else 0
