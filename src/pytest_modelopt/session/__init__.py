"""The state of one pytest session: hardware, one Evaluator per spec, results and baselines.

Under pytest-xdist each worker measures its tests and compares them with the stored baselines
(reading is safe anywhere), then sends its result records to the controller through
``workeroutput``; only the controller writes files (results JSON, baselines, ``.obtained.json``).
Timed sections take a file lock shared by every pytest process on the machine, so that two
workers never measure at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modelopt.atomic import atomic_write_text
from pytest_modelopt.config import Settings
from pytest_modelopt.hardware import Hardware
from pytest_modelopt.session.baselines import SessionBaselines
from pytest_modelopt.session.context import SessionContext, utc_now
from pytest_modelopt.session.scheduling import MeasurementScheduler
from pytest_modelopt.session.scope import RunScope

if TYPE_CHECKING:
    from pytest_modelopt.evaluation import VariantResult

RESULTS_SCHEMA = 1
WORKER_OUTPUT_KEY = "modelopt"


class ModeloptSession:
    """Registered as a plugin in pytest_configure; fixtures and hooks reach it through the stash."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.context = SessionContext(config, settings)
        self.scope = RunScope(config)
        self.scheduler = MeasurementScheduler(self.context)
        self.baselines = SessionBaselines(self.context, self.scope)
        self.config = config
        self.settings = settings
        self.log = self.context.log
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.records: list[dict[str, Any]] = []
        self.benchmarks: list[dict[str, Any]] = []
        self.messages: list[tuple[str, dict[str, bool]]] = []

    @property
    def hardware(self) -> Hardware:
        return self.context.hardware

    # -- records -----------------------------------------------------------------------------

    def record(self, nodeid: str, result: VariantResult) -> None:
        from pytest_modelopt.report import benchmark_entry

        self.records.append(
            {
                "test": nodeid,
                "worker": self.worker,
                "timed_sections": self.scheduler.sections.get(nodeid, []),
                "baseline": self.baselines.comparison_of(nodeid),
                **result.to_dict(),
            }
        )
        if result.meter == "wall":  # pytest-benchmark's schema holds seconds, not counts
            self.benchmarks.append(benchmark_entry(nodeid, result))

    # -- hooks ---------------------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: take in what a worker measured."""
        output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if output is None:
            return
        data = json.loads(output)
        self.records += data["records"]
        self.benchmarks += data["benchmarks"]
        self.baselines.merge_worker_output(data)
        self.scope.merge_worker_output(data)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.scheduler.close()
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller writes
            workeroutput[WORKER_OUTPUT_KEY] = json.dumps(
                {
                    "records": self.records,
                    "benchmarks": self.benchmarks,
                    **self.baselines.worker_output(),
                    **self.scope.worker_output(),
                },
                default=str,
            )
            return
        self.messages += self.baselines.write_files(self.records)
        if self.settings.json_path is not None and self.records:
            self.write_json(self.settings.json_path)
            self.messages.append((f"results written to {self.settings.json_path}", {}))
        if self.baselines.failed_writes and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

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
        for line, markup in self.baselines.summary_lines(self.records):
            terminalreporter.write_line(line, **markup)
        for line, markup in self.messages:
            terminalreporter.write_line(line, **markup)

    def write_json(self, path: Path) -> None:
        from pytest_modelopt.report import benchmark_header, environment

        created = utc_now()
        document: dict[str, Any] = {
            **benchmark_header(created),
            "benchmarks": self.benchmarks,
            "schema": RESULTS_SCHEMA,
            "created": created,
            # counted sessions are their own column in a matrix: <fingerprint>-counted
            "fingerprint": self.baselines.store.fingerprint,
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
