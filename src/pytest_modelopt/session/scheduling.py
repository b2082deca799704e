"""When and how variants are measured.

One Evaluator per spec, and every build and measurement inside a timed section that holds a
machine-wide lock.

The lock is a file shared by every pytest process of this user on the machine, xdist workers
included, so that two of them never measure at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_modelopt.atomic import atomic_write_text
from pytest_modelopt.readable import one_line, quiet_third_party_logs
from pytest_modelopt.session.context import SessionContext

if TYPE_CHECKING:
    from filelock import FileLock

    from pytest_modelopt.evaluation import Evaluator
    from pytest_modelopt.measure import Comparison
    from pytest_modelopt.search import SearchResult
    from pytest_modelopt.spec import ModelSpec
    from pytest_modelopt.variant_contract import VariantContract

# One lock per user: another user's lock file would not be writable.
TIMING_LOCK = (
    Path(tempfile.gettempdir()) / f"pytest-modelopt-timing-{getattr(os, 'getuid', int)()}.lock"
)
# Who holds the lock, written by the holder for the processes that wait.
TIMING_LOCK_HOLDER = TIMING_LOCK.with_suffix(".holder.json")


class MeasurementScheduler:
    """Builds and measures the session's variants, one at a time on the machine.

    It keeps one Evaluator per spec and, per test, the timed sections and the wait for the lock.
    """

    def __init__(self, context: SessionContext) -> None:
        self.context = context
        self._lock: FileLock | None = None
        self._evaluators: dict[int, tuple[ModelSpec, Evaluator]] = {}
        self.sections: dict[str, list[list[float]]] = {}  # test id -> [start, end] per section
        self.waits: dict[str, float] = {}  # test id -> seconds it waited for the timing lock

    def evaluator(self, spec: ModelSpec, workdir: Path) -> Evaluator:
        """Return the spec's Evaluator, made on first use: it builds the reference once per spec."""
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
                reuse_builds=settings.build_cache,
                log=self.context.log,
            )
            self._evaluators[key] = (spec, evaluator)  # the spec is kept so its id stays unique
        return self._evaluators[key][1]

    @contextlib.contextmanager
    def timed_section(self, nodeid: str) -> Iterator[None]:
        """Hold the machine-wide timing lock for the block; the span is recorded.

        Third-party logs below WARNING are kept out of pytest's capture meanwhile (what runs here
        builds, times and profiles variants).
        """
        from filelock import FileLock

        if self._lock is None:
            self._lock = FileLock(TIMING_LOCK)
        outermost = not self._lock.is_locked
        if outermost:
            waited = self._acquire(nodeid)
            self.waits[nodeid] = self.waits.get(nodeid, 0.0) + waited
            write_holder(nodeid)
        else:
            self._lock.acquire()
        start = time.time()
        try:
            with quiet_third_party_logs():
                yield
        finally:
            self.sections.setdefault(nodeid, []).append([start, time.time()])
            if outermost:
                TIMING_LOCK_HOLDER.unlink(missing_ok=True)
            self._lock.release()

    def _acquire(self, nodeid: str) -> float:
        """Take the timing lock; return the seconds waited.

        While another process holds it, say who after a second and again whenever the holder
        changes.
        """
        from filelock import Timeout

        assert self._lock is not None
        began = time.monotonic()
        timeout, told = 1.0, None
        while True:
            try:
                self._lock.acquire(timeout=timeout)
                return time.monotonic() - began
            except Timeout:
                holder = describe_holder(read_holder())
                if holder != told:
                    waited = format_seconds(time.monotonic() - began)
                    self.context.log(f"{nodeid}: waiting ({waited} so far) for {holder}")
                    told = holder
                timeout = 10.0

    def evaluate(
        self,
        nodeid: str,
        spec: ModelSpec,
        technique: str,
        workdir: Path,
        params: Mapping[str, Any] | None = None,
        *,
        max_time: float | None = None,
        meter: str | None = None,
    ) -> VariantContract:
        """Build and measure one variant with the timing lock held; put it under its contract.

        Building too: a build in another worker would disturb this one's timing as much as
        another measurement. The contract's later measurements (an inconclusive check's) hold
        the lock as well.
        """
        evaluator = self.evaluator(spec, workdir)
        slowdown = dict(self.context.settings.inject_slowdown).get(technique)
        with self.timed_section(nodeid):
            if slowdown:
                from pytest_modelopt.testing import inject_slowdown

                variant = evaluator.build(technique, params)
                inject_slowdown(variant, slowdown, batch=spec.example_input)
            result, remeasure = evaluator.measure(technique, params, max_time=max_time, meter=meter)
            return evaluator.contract(result, self._locked(nodeid, remeasure))

    def search(
        self,
        nodeid: str,
        spec: ModelSpec,
        workdir: Path,
        budgets: Any = None,
        **options: Any,  # search's own keywords, checked where they land
    ) -> SearchResult:
        """Run ``Evaluator.best`` for the modelopt_best fixture, in one timed section.

        Its progress goes to the terminal through the evaluator's log. A technique named by
        --modelopt-inject-slowdown is built first and slowed down, as ``evaluate`` does, so that
        the search measures the slowed variant.
        """
        from pytest_modelopt.errors import ModeloptError
        from pytest_modelopt.search import _params_of

        evaluator = self.evaluator(spec, workdir)
        techniques = options.get("techniques")
        with self.timed_section(nodeid):
            for technique, fraction in self.context.settings.inject_slowdown:
                if techniques is not None and technique not in techniques:
                    continue
                try:
                    params = _params_of(options.get("params"), technique)
                    variant = evaluator.build(technique, params)
                except ModeloptError:  # the search skips it or reports the failure
                    continue
                from pytest_modelopt.testing import inject_slowdown

                inject_slowdown(variant, fraction, batch=spec.example_input)
            return evaluator.best(budgets, **options)

    def _locked(self, nodeid: str, remeasure: Callable[[], Comparison]) -> Callable[[], Comparison]:
        """Wrap a later second measurement (an inconclusive check's) so it holds the lock too."""

        def locked() -> Comparison:
            with self.timed_section(nodeid):
                return remeasure()

        return locked

    def close(self) -> None:
        """End the session's counting workers, if the instructions meter started any."""
        counting = sys.modules.get("pytest_modelopt.counting")  # never imported just to close
        if counting is not None:
            counting.close_shared_workers()


def write_holder(nodeid: str) -> None:
    """Tell waiting processes who holds the timing lock (pid, test, since when)."""
    record = {"pid": os.getpid(), "test": nodeid, "since": time.time()}
    with contextlib.suppress(OSError):  # a waiter then says less, nothing worse
        atomic_write_text(TIMING_LOCK_HOLDER, json.dumps(record))


def read_holder() -> dict[str, Any] | None:
    """Return the timing lock's holder record, or None when it is missing or unreadable."""
    try:
        record = json.loads(TIMING_LOCK_HOLDER.read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def describe_holder(record: dict[str, Any] | None) -> str:
    """Say who holds the timing lock, in words.

    The record can be missing or stale (a process that does not write one, such as an older
    pytest-modelopt).
    """
    unknown = f"another process's measurement (the lock {TIMING_LOCK} names no holder)"
    if record is None or not _alive(record.get("pid")):
        return unknown
    try:
        since = dt.datetime.fromtimestamp(float(record["since"])).strftime("%H:%M:%S")
        held = format_seconds(time.time() - float(record["since"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        return unknown
    test = one_line(str(record.get("test")))
    return f"pid {record['pid']}, measuring {test} since {since} ({held})"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def format_seconds(seconds: float) -> str:
    """Format a duration to the second: ``42 s`` or ``3 min 5 s``."""
    minutes, rest = divmod(max(0, round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
