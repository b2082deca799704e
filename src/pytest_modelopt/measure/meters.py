"""Meters: the sides of a comparison, as the engine asks them for samples.

``Meter`` is the interface; wall-clock meters are :class:`~pytest_modelopt.worker.InProcess`,
:class:`~pytest_modelopt.worker.Worker` and ``CudaEvents`` (seconds), the counting meter is
:class:`~pytest_modelopt.counting.CountedSide` (instructions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pytest_modelopt.worker import InProcess

Call = Callable[[], Any]


class Meter(Protocol):
    """One side of a comparison, as the engine sees it: started, asked for samples, closed.

    ``sample(calls)`` makes that many calls and returns one figure per call, in ``unit``
    (``"s"`` for wall-clock meters, ``"instructions"`` for the counting meter). ``fallback`` is
    the in-process call to time instead when the meter cannot start (None: no fallback, the
    measurement fails with the reason).
    """

    isolation: str

    @property
    def running(self) -> bool:
        """Return whether the meter has started and can be sampled."""
        ...

    def start(self) -> None:
        """Get ready to sample (a worker: spawn it and load the variant)."""
        ...

    def sample(self, calls: int) -> list[float]:
        """Make ``calls`` calls; return one figure per call, in ``unit``."""
        ...

    def close(self) -> None:
        """Release what :meth:`start` took."""
        ...


Side = Meter


class CudaEvents(InProcess):
    """A side timed with CUDA events recorded around each call on the current stream.

    Each call waits for the end event: the GPU's own clock, covering the launches and all the work
    they queue.
    """

    isolation = "in process (CUDA events)"

    def sample(self, calls: int) -> list[float]:
        """Time ``calls`` calls one by one on the GPU's clock; return each call's seconds."""
        import torch

        samples = []
        for _ in range(calls):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            begin.record()
            self.call()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end) / 1e3)
        return samples
