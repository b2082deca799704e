"""When and how variants are measured: one Evaluator per spec, and every build and measurement
inside a timed section that holds a machine-wide lock.

The lock is a file shared by every pytest process of this user on the machine, xdist workers
included, so that two of them never measure at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modelopt.readable import quiet_third_party_logs
from pytest_modelopt.session.context import SessionContext

if TYPE_CHECKING:
    from filelock import FileLock

    from pytest_modelopt.evaluation import Evaluator, VariantResult
    from pytest_modelopt.measure import Comparison
    from pytest_modelopt.spec import ModelSpec

# One lock per user: another user's lock file would not be writable.
TIMING_LOCK = (
    Path(tempfile.gettempdir()) / f"pytest-modelopt-timing-{getattr(os, 'getuid', int)()}.lock"
)


class MeasurementScheduler:
    def __init__(self, context: SessionContext) -> None:
        self.context = context
        self._lock: FileLock | None = None
        self._evaluators: dict[int, tuple[ModelSpec, Evaluator]] = {}
        self.sections: dict[str, list[list[float]]] = {}  # test id -> [start, end] per section

    def evaluator(self, spec: ModelSpec, workdir: Path) -> Evaluator:
        """The spec's Evaluator, made on first use: it builds the reference once per spec."""
        from pytest_modelopt.evaluation import Evaluator

        key = id(spec)
        if key not in self._evaluators:
            settings = self.context.settings
            evaluator = Evaluator(
                spec,
                settings=settings.measure_settings(self.context.hardware),
                hardware=self.context.hardware,
                workdir=workdir,
                inconclusive=settings.inconclusive,
                cache_dir=self.context.cache_dir(),
                log=self.context.log,
            )
            self._evaluators[key] = (spec, evaluator)  # the spec is kept so its id stays unique
        return self._evaluators[key][1]

    @contextlib.contextmanager
    def timed_section(self, nodeid: str) -> Iterator[None]:
        """Hold the machine-wide timing lock, third-party logs below WARNING kept out of pytest's
        capture (what runs here builds, times and profiles variants); the span is recorded."""
        from filelock import FileLock, Timeout

        if self._lock is None:
            self._lock = FileLock(TIMING_LOCK)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            self.context.log(f"waiting for another process's measurement to finish ({TIMING_LOCK})")
            self._lock.acquire()
        start = time.time()
        try:
            with quiet_third_party_logs():
                yield
        finally:
            self.sections.setdefault(nodeid, []).append([start, time.time()])
            self._lock.release()

    def evaluate(
        self,
        nodeid: str,
        spec: ModelSpec,
        technique: str,
        workdir: Path,
        params: Mapping[str, Any] | None = None,
        *,
        max_time_s: float | None = None,
        meter: str | None = None,
    ) -> VariantResult:
        """Build and measure one variant with the timing lock held (building too: a build in
        another worker would disturb this one's timing as much as another measurement)."""
        evaluator = self.evaluator(spec, workdir)
        slowdown = dict(self.context.settings.inject_slowdown).get(technique)
        with self.timed_section(nodeid):
            if slowdown:
                from pytest_modelopt.testing import inject_slowdown

                variant = evaluator.build(technique, params)
                inject_slowdown(variant, slowdown, batch=spec.example_input)
            result = evaluator.evaluate(technique, params, max_time_s=max_time_s, meter=meter)
        result.remeasure = self._locked(nodeid, result.remeasure)
        return result

    def _locked(
        self, nodeid: str, remeasure: Callable[[], Comparison] | None
    ) -> Callable[[], Comparison] | None:
        """A second measurement, asked for later by the baseline check, holds the lock too."""
        if remeasure is None:
            return None

        def locked() -> Comparison:
            with self.timed_section(nodeid):
                return remeasure()

        return locked

    def close(self) -> None:
        """End the session's counting workers, if the instructions meter started any."""
        counting = sys.modules.get("pytest_modelopt.counting")  # never imported just to close
        if counting is not None:
            counting.close_shared_workers()
