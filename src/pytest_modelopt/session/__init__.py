"""The state of one pytest session, in parts that each own one concern.

- ``context``: the config, settings, detected hardware, cache directory and progress log they share;
- ``scope``: which tests this run collected, and whether it is a full run;
- ``scheduling``: one Evaluator per spec, each measurement inside the machine-wide timing lock;
- ``baselines``: each test's verdict against its stored entry, and the baseline files written;
- ``reporting``: result records, the terminal summary and the results JSON.

Under pytest-xdist each worker measures its tests and compares them with the stored baselines
(reading is safe anywhere), then sends what the parts gathered to the controller through
``workeroutput``; only the controller writes files (results JSON, baselines, ``.obtained.json``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from pytest_modelopt.config import Settings
from pytest_modelopt.hardware import Hardware
from pytest_modelopt.session.baselines import SessionBaselines
from pytest_modelopt.session.context import SessionContext
from pytest_modelopt.session.reporting import SessionReport
from pytest_modelopt.session.scheduling import MeasurementScheduler
from pytest_modelopt.session.scope import RunScope

if TYPE_CHECKING:
    from pytest_modelopt.search import SearchResult
    from pytest_modelopt.variant_contract import VariantContract

WORKER_OUTPUT_KEY = "modelopt"


class ModeloptSession:
    """The plugin's state for one pytest session, and the hooks that need its parts in order.

    Registered as a plugin in pytest_configure (``scope`` beside it, as a plugin of its own);
    fixtures and hooks reach it through the stash. Its own hooks are the ones that need the
    parts in a fixed order: what an xdist worker sends, and the session's end.
    """

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.context = SessionContext(config, settings)
        self.scope = RunScope(config)
        self.scheduler = MeasurementScheduler(self.context)
        self.baselines = SessionBaselines(self.context, self.scope, self.scheduler.timed_section)
        self.report = SessionReport(self.context, self.baselines)

    @property
    def settings(self) -> Settings:
        """Return the session's settings."""
        return self.context.settings

    @property
    def hardware(self) -> Hardware:
        """Return this machine's hardware, detected on first use."""
        return self.context.hardware

    def record(self, nodeid: str, result: VariantContract) -> None:
        """Record a measured variant, with its timed sections and its baseline comparison."""
        baseline = self.baselines.comparison_of(nodeid, result.meter)
        self.report.record(self._header(nodeid, baseline), result)

    def record_search(self, nodeid: str, found: SearchResult) -> None:
        """Record a search's choice (modelopt_best) for the results JSON and the summary.

        With --modelopt-save-baseline it also becomes the test's baseline entry.
        """
        self.baselines.record_choice(nodeid, found)
        baseline = self.baselines.comparison_of_choice(nodeid)
        self.report.record_search(self._header(nodeid, baseline), found)

    def _header(self, nodeid: str, baseline: dict[str, Any]) -> dict[str, Any]:
        """Return the test's record header: its timed sections, lock wait and baseline."""
        return self.report.header(
            nodeid,
            timed_sections=self.scheduler.sections.get(nodeid, []),
            lock_wait_s=self.scheduler.waits.get(nodeid, 0.0),
            baseline=baseline,
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Take in what an xdist worker measured (on the controller)."""
        output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if output is None:
            return
        data = json.loads(output)
        self.report.merge_worker_output(data)
        self.baselines.merge_worker_output(data)
        self.scope.merge_worker_output(data)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the baselines and results JSON; an xdist worker sends what it gathered instead.

        A baseline file that could not be written fails an otherwise passing session.
        """
        self.scheduler.close()
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller writes
            workeroutput[WORKER_OUTPUT_KEY] = json.dumps(
                {
                    **self.report.worker_output(),
                    **self.baselines.worker_output(),
                    **self.scope.worker_output(),
                },
                default=str,
            )
            return
        self.report.messages += self.baselines.write_files(self.report.records)
        self.report.write_results()
        if self.baselines.failed_writes and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print the session's results table and messages at the end of the run."""
        self.report.write_summary(terminalreporter)
