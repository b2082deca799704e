"""The state of one pytest session: hardware, one Evaluator per spec, results and baselines.

Under pytest-xdist each worker measures its tests and compares them with the stored baselines
(reading is safe anywhere), then sends its result records to the controller through
``workeroutput``; only the controller writes files (results JSON, baselines, ``.obtained.json``).
Timed sections take a file lock shared by every pytest process on the machine, so that two
workers never measure at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modelopt.atomic import atomic_write_text
from pytest_modelopt.config import Settings
from pytest_modelopt.errors import ContractViolation, InvalidFileError
from pytest_modelopt.hardware import Hardware, detect_hardware

if TYPE_CHECKING:
    from filelock import FileLock

    from pytest_modelopt.baselines import BaselineStore, SaveReport, Tolerances
    from pytest_modelopt.evaluation import Evaluator, VariantResult
    from pytest_modelopt.measure import Comparison
    from pytest_modelopt.spec import ModelSpec

RESULTS_SCHEMA = 1
WORKER_OUTPUT_KEY = "modelopt"
# One lock per user (another user's lock file would not be writable): every pytest process of
# this user on this machine, xdist workers included, measures one at a time.
TIMING_LOCK = (
    Path(tempfile.gettempdir()) / f"pytest-modelopt-timing-{getattr(os, 'getuid', int)()}.lock"
)


class ModeloptSession:
    """Registered as a plugin in pytest_configure; fixtures and hooks reach it through the stash."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self._hardware: Hardware | None = None
        self._stores: dict[str, BaselineStore] = {}
        self._lock: FileLock | None = None
        self._evaluators: dict[int, tuple[ModelSpec, Evaluator]] = {}
        self.records: list[dict[str, Any]] = []
        self.benchmarks: list[dict[str, Any]] = []
        self.sections: dict[str, list[list[float]]] = {}
        self.baseline_status: dict[str, dict[str, Any]] = {}
        self.obtained: dict[str, dict[str, Any]] = {}  # test id -> entry that regressed
        self.collected: set[str] = set()
        self.partial: list[str] = []  # why this run is not a full run
        self.messages: list[tuple[str, dict[str, bool]]] = []
        self.failed_writes = False

    @property
    def hardware(self) -> Hardware:
        if self._hardware is None:
            self._hardware = detect_hardware(
                cache_dir=self._cache_dir(), machine=self.settings.machine
            )
        return self._hardware

    @property
    def store(self) -> BaselineStore:
        """The baselines of the session's meter (``--modelopt-measure``)."""
        return self.store_for(self.settings.measure)

    def store_for(self, meter: str) -> BaselineStore:
        """The baselines of one meter: counted ones live under a fingerprint of their own."""
        from pytest_modelopt.baselines import BaselineStore

        if meter not in self._stores:
            root = self.settings.baseline_root
            self._stores[meter] = BaselineStore(root, self.hardware, meter=meter)
        return self._stores[meter]

    def _cache_dir(self) -> Path | None:
        cache = getattr(self.config, "cache", None)  # absent under -p no:cacheprovider
        return cache.mkdir("modelopt") if cache is not None else None

    def log(self, message: str) -> None:
        """Progress of long work, printed live through pytest's terminal reporter."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.config.get_verbosity() < 0:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"modelopt: {message}", cyan=True)

    def evaluator(self, spec: ModelSpec, workdir: Path) -> Evaluator:
        from pytest_modelopt.evaluation import Evaluator

        key = id(spec)
        if key not in self._evaluators:
            evaluator = Evaluator(
                spec,
                settings=self.settings.measure_settings(self.hardware),
                hardware=self.hardware,
                workdir=workdir,
                inconclusive=self.settings.inconclusive,
                cache_dir=self._cache_dir(),
                log=self.log,
            )
            self._evaluators[key] = (spec, evaluator)  # the spec is kept so its id stays unique
        return self._evaluators[key][1]

    # -- measuring ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def timed_section(self, nodeid: str) -> Iterator[None]:
        """Hold the machine-wide timing lock; the section's wall-clock span is recorded."""
        from filelock import FileLock, Timeout

        if self._lock is None:
            self._lock = FileLock(TIMING_LOCK)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            self.log(f"waiting for another process's measurement to finish ({TIMING_LOCK})")
            self._lock.acquire()
        start = time.time()
        try:
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
        slowdown = dict(self.settings.inject_slowdown).get(technique)
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
        if remeasure is None:
            return None

        def locked() -> Comparison:
            with self.timed_section(nodeid):
                return remeasure()

        return locked

    # -- baselines ---------------------------------------------------------------------------

    def check_baseline_file(self, nodeid: str, meter: str | None = None) -> None:
        """Raise InvalidFileError before measuring if this test's baseline file is broken."""
        from pytest_modelopt.baselines import module_of

        self.store_for(meter or self.settings.measure).load(module_of(nodeid))

    def compare_with_baseline(
        self, nodeid: str, result: VariantResult, tolerances: Tolerances
    ) -> None:
        """Judge the result against its stored entry; raise ContractViolation on a regression."""
        from pytest_modelopt.baselines import (
            compare,
            format_baseline_checks,
            module_of,
            what_grew,
        )
        from pytest_modelopt.budget import LOOSEN_TOLERANCE, Verdict, what_to_do

        if self.settings.save_baseline:
            self.baseline_status[nodeid] = {"status": "recorded"}
            return
        store = self.store_for(result.meter)
        stored = store.entry(nodeid)
        if stored is None:  # a new test in a module that has a baseline: "no entry"
            file = store.load(module_of(nodeid))
            self.baseline_status[nodeid] = {"status": "no entry" if file else "no baseline"}
            return
        same, differences = store.same_hardware(module_of(nodeid))
        for attempt in range(2):
            new = self.entry(result)
            checks = compare(stored, new, tolerances, same_hardware=same)
            undecided = [c for c in checks if c.verdict is Verdict.INCONCLUSIVE]
            if not undecided or attempt or result.remeasure is None:
                break
            self.log(f"{result.label}: inconclusive against the baseline, measuring once more")
            result.comparison = result.remeasure()
        failed = [c for c in checks if c.verdict is Verdict.FAIL]
        status = "regressed" if failed else "inconclusive" if undecided else "passed"
        self.baseline_status[nodeid] = {
            "status": status,
            "checks": [c.to_dict() for c in checks],
            "hardware_differences": differences,
        }
        where = f"the baseline for {store.fingerprint}"
        if not same and tolerances.latency is not None:
            where += " (absolute latency not compared: the detected hardware differs)"
        if failed:
            if result.meter == "wall":  # what grew, by operator: profiled now, the machine held
                with self.timed_section(nodeid):
                    result.profile_operators()
                new = self.entry(result)
            self.obtained[nodeid] = new
            names = ", ".join(c.metric for c in failed)
            table = format_baseline_checks(
                checks, f"{result.label}: regression against {where} ({names})"
            )
            grown, rows = what_grew(stored, new, result.operators.get("unavailable"))
            self.baseline_status[nodeid].update(rows)
            raise ContractViolation(f"{table}\n{grown}" if grown else table)
        if undecided and self.settings.inconclusive == "fail":
            names = ", ".join(c.metric for c in undecided)
            table = format_baseline_checks(
                checks,
                f"{result.label}: inconclusive against {where} ({names}): the measurements "
                "cannot decide on this machine",
            )
            advice = what_to_do(
                [c.check for c in undecided], result.comparison.elapsed_s, LOOSEN_TOLERANCE
            )
            raise ContractViolation(f"{table}\n{advice}")

    def entry(self, result: VariantResult) -> dict[str, Any]:
        from pytest_modelopt.baselines import entry_from_record
        from pytest_modelopt.report import environment

        return entry_from_record(
            result.to_dict(raw=False),
            recorded=_now(),
            settings=self.settings.recorded_settings(),
            environment=environment(),
        )

    # -- records -----------------------------------------------------------------------------

    def record(self, nodeid: str, result: VariantResult) -> None:
        from pytest_modelopt.report import benchmark_entry

        self.records.append(
            {
                "test": nodeid,
                "worker": self.worker,
                "timed_sections": self.sections.get(nodeid, []),
                "baseline": self.baseline_status.get(nodeid, {"status": "not compared"}),
                **result.to_dict(),
            }
        )
        if result.meter == "wall":  # pytest-benchmark's schema holds seconds, not counts
            self.benchmarks.append(benchmark_entry(nodeid, result))

    # -- hooks ---------------------------------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected = {item.nodeid for item in session.items}

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        if items:
            self.partial.append(f"{len(items)} tests deselected")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.partial.append(f"collection error in {report.nodeid or 'a module'}")

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: take in what a worker measured."""
        output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if output is None:
            return
        data = json.loads(output)
        self.records += data["records"]
        self.benchmarks += data["benchmarks"]
        self.obtained.update(data["obtained"])
        self.collected.update(data["collected"])
        self.partial += [reason for reason in data["partial"] if reason not in self.partial]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        counting = sys.modules.get("pytest_modelopt.counting")
        if counting is not None:  # the session's counting workers end with it
            counting.close_shared_workers()
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller writes
            workeroutput[WORKER_OUTPUT_KEY] = json.dumps(
                {
                    "records": self.records,
                    "benchmarks": self.benchmarks,
                    "obtained": self.obtained,
                    "collected": sorted(self.collected),
                    "partial": self.partial,
                },
                default=str,
            )
            return
        self._write_baselines()
        if self.settings.json_path is not None and self.records:
            self.write_json(self.settings.json_path)
            self.messages.append((f"results written to {self.settings.json_path}", {}))
        if self.failed_writes and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_baselines(self) -> None:
        from pytest_modelopt.baselines import SaveReport, module_of

        report = SaveReport()
        if self.settings.save_baseline and self.records:
            from pytest_modelopt.baselines import entry_from_record
            from pytest_modelopt.report import environment

            created, env = _now(), environment()
            by_meter: dict[str, dict[str, Any]] = {}
            for record in self.records:
                by_meter.setdefault(record.get("meter", "wall"), {})[record["test"]] = (
                    entry_from_record(
                        record,
                        recorded=created,
                        settings=self.settings.recorded_settings(),
                        environment=env,
                    )
                )
            for meter, entries in sorted(by_meter.items()):
                self.store_for(meter).save(entries, report)
        by_module: dict[tuple[str, str], dict[str, Any]] = {}
        for nodeid, entry in self.obtained.items():
            key = (entry.get("meter", "wall"), module_of(nodeid))
            by_module.setdefault(key, {})[nodeid] = entry
        for (meter, module), updates in sorted(by_module.items()):
            path = self.store_for(meter).write_obtained(module, updates)
            self.messages.append(
                (f"regressed measurements written beside the baseline for diffing: {path}", {})
            )
        self._unused(report)
        self._report_writes(report)

    def _unused(self, report: SaveReport) -> None:
        partial = self._partial_reasons()
        if self.settings.prune_baselines:
            if partial:
                report.errors.append(
                    "--modelopt-prune-baselines refused: not a full run ("
                    + "; ".join(partial)
                    + "): nothing was deleted"
                )
                return
            self.store.prune(self.collected, self._in_scope, report)
            return
        if partial or not self.store.exists():
            return
        try:
            entries, files = self.store.unused(self.collected, self._in_scope)
        except InvalidFileError as error:
            report.errors.append(str(error))
            return
        if entries:
            shown = ", ".join(entries[:5]) + (
                f" and {len(entries) - 5} more" if len(entries) > 5 else ""
            )
            self.messages.append(
                (
                    f"unused baselines for {self.store.fingerprint}: {len(entries)} entries of "
                    f"tests that were not collected ({shown}; files with none left: "
                    f"{', '.join(p.name for p in files) or 'none'}); delete them with "
                    "--modelopt-prune-baselines on a full run",
                    {"yellow": True},
                )
            )

    def _partial_reasons(self) -> list[str]:
        reasons = list(self.partial)
        option = self.config.option
        if getattr(option, "keyword", ""):
            reasons.append(f"-k {option.keyword}")
        if getattr(option, "markexpr", ""):
            reasons.append(f"-m {option.markexpr}")
        reasons += [f"node id {arg}" for arg in self.config.args if "::" in arg]
        if getattr(option, "lf", False):
            reasons.append("--last-failed")
        return reasons

    def _in_scope(self, module: str) -> bool:
        """Whether a module lies under the paths this run was given."""
        root = Path(self.config.rootpath)
        target = (root / module).resolve()
        for arg in self.config.args:
            path = Path(self.config.invocation_params.dir, arg.split("::")[0]).resolve()
            if target == path or path in target.parents:
                return True
        return False

    def _report_writes(self, report: SaveReport) -> None:
        for line in report.written:
            self.messages.append((f"baseline saved: {line}", {"green": True}))
        if report.removed_entries:
            self.messages.append(
                (
                    f"pruned {len(report.removed_entries)} unused baseline entries "
                    f"({', '.join(report.removed_entries)}); files deleted: "
                    f"{', '.join(report.removed_files) or 'none'}",
                    {"yellow": True},
                )
            )
        for error in report.errors:
            self.messages.append((f"ERROR: {error}", {"red": True, "bold": True}))
            self.failed_writes = True

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        from pytest_modelopt.report import results_table

        if not self.records and not self.messages:
            return
        terminalreporter.section("modelopt results")
        terminalreporter.write_line(f"hardware: {self.hardware.describe()}")
        for line, markup in results_table(self.records):
            terminalreporter.write_line(line, **markup)
        notes: dict[str, set[str]] = {}
        for record in self.records:
            for note in record["variant"]["notes"]:
                notes.setdefault(note, set()).add(record["technique"])
        for note, techniques in sorted(notes.items()):
            terminalreporter.write_line(f"note ({', '.join(sorted(techniques))}): {note}")
        for line, markup in self._baseline_lines():
            terminalreporter.write_line(line, **markup)
        for line, markup in self.messages:
            terminalreporter.write_line(line, **markup)

    def _baseline_lines(self) -> list[tuple[str, dict[str, bool]]]:
        if not self.records or self.settings.save_baseline:
            return []
        lines: list[tuple[str, dict[str, bool]]] = []
        meters = dict.fromkeys(record.get("meter", "wall") for record in self.records)
        for meter in meters:
            statuses = [
                record["baseline"]["status"]
                for record in self.records
                if record.get("meter", "wall") == meter
            ]
            lines += self._baseline_summary(self.store_for(meter), statuses)
        return lines

    @staticmethod
    def _baseline_summary(
        store: BaselineStore, statuses: list[str]
    ) -> list[tuple[str, dict[str, bool]]]:
        """What one meter's records were compared with: the baseline's verdicts, or why none."""
        if not store.exists():
            lines = [
                (
                    f"no baseline for {store.fingerprint} in {store.root}: contracts were checked "
                    "against their own budgets only; record one with --modelopt-save-baseline",
                    {"yellow": True},
                )
            ]
            for other, differences in store.other_fingerprints().items():
                lines.append(
                    (
                        f"baselines of another fingerprint, never compared here: {other} "
                        f"(differs: {'; '.join(differences) or 'fields not recorded'})",
                        {"yellow": True},
                    )
                )
            return lines
        counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
        summary = ", ".join(f"{count} {status}" for status, count in counts.items())
        markup = {"red": True} if "regressed" in counts else {"green": True}
        return [(f"compared with the baseline for {store.fingerprint}: {summary}", markup)]

    def write_json(self, path: Path) -> None:
        from pytest_modelopt.report import benchmark_header, environment

        created = _now()
        document: dict[str, Any] = {
            **benchmark_header(created),
            "benchmarks": self.benchmarks,
            "schema": RESULTS_SCHEMA,
            "created": created,
            # counted sessions are their own column in a matrix: <fingerprint>-counted
            "fingerprint": self.store.fingerprint,
            "hardware": {**self.hardware.to_dict(), **_detected(self.hardware)},
            "environment": environment(),
            "settings": self.settings.to_dict(),
            "results": self.records,
        }
        text = json.dumps(_finite(document), indent=2, sort_keys=True, allow_nan=False, default=str)
        atomic_write_text(path, text + "\n")


def _finite(data: Any) -> Any:
    """JSON has no infinity: unbounded interval sides and the like are written as null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def _detected(hardware: Hardware) -> dict[str, str]:
    """The detected fingerprint, which a --modelopt-machine name hides, for reports."""
    return {"detected_fingerprint": dataclasses.replace(hardware, machine=None).fingerprint}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
